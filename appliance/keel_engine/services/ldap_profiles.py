"""What differs between LDAP servers, as data: where accounts and groups are,
which attribute a user signs in with, the directory's own ids, how group
membership is found, and how a disabled account is marked. Pure: the
filters are built here (escaped), services/directory.py sends them."""
from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    user_class: str           # a filter every account matches
    login: dict               # login attribute choice -> attribute
    default_login: str
    user_id: str              # the directory's own, stable id of an account
    group_class: str
    group_id: str
    group_name: str = "cn"
    first_name: str = "givenName"
    last_name: str = "sn"
    email: str = "mail"
    # membership: "member" (groups list their members' DNs; posixGroup memberUid too),
    # "memberof" (the account lists its groups, nested ones included),
    # "in_chain" (AD: member with LDAP_MATCHING_RULE_IN_CHAIN, nested groups included)
    membership: str = "member"
    # an account matching this (AND the account's own filter) is disabled
    disabled: str | None = None
    binary_ids: bool = False  # objectGUID: 16 bytes, shown as a UUID


PROFILES = {
    "openldap": Profile(
        name="openldap", user_class="(|(objectClass=inetOrgPerson)(objectClass=posixAccount))",
        login={"uid": "uid"}, default_login="uid", user_id="entryUUID",
        group_class="(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
        group_id="entryUUID", membership="member",
        # the ppolicy overlay's lock (pwdAccountLockedTime); slapd also refuses the bind then
        disabled="(pwdAccountLockedTime=*)"),
    "389ds": Profile(
        name="389ds", user_class="(objectClass=person)", login={"uid": "uid"}, default_login="uid",
        user_id="nsUniqueId", group_class="(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
        group_id="nsUniqueId", membership="memberof", disabled="(nsAccountLock=TRUE)"),
    "freeipa": Profile(
        name="freeipa", user_class="(objectClass=posixAccount)", login={"uid": "uid"}, default_login="uid",
        user_id="ipaUniqueID", group_class="(objectClass=ipaUserGroup)", group_id="ipaUniqueID",
        membership="memberof", disabled="(nsAccountLock=TRUE)"),
    "ad": Profile(
        name="ad", user_class="(&(objectCategory=person)(objectClass=user))",
        login={"upn": "userPrincipalName", "samaccountname": "sAMAccountName"}, default_login="upn",
        user_id="objectGUID", group_class="(objectClass=group)", group_id="objectGUID",
        membership="in_chain", disabled="(userAccountControl:1.2.840.113556.1.4.803:=2)", binary_ids=True),
}


def esc(value: str) -> str:
    from ldap3.utils.conv import escape_filter_chars   # ldap3 only where a directory is used
    return escape_filter_chars(value)


def login_attribute(profile: Profile, choice: str | None) -> str:
    return profile.login[choice or profile.default_login]


def login_value(profile: Profile, choice: str | None, name: str, domain: str) -> str:
    """What the login attribute holds for user@domain: AD's userPrincipalName
    is name@domain itself, every other attribute just the name."""
    attr = login_attribute(profile, choice)
    return f"{name}@{domain}" if attr == "userPrincipalName" else name


def account_filter(profile: Profile, attr: str, value: str) -> str:
    return f"(&{profile.user_class}({attr}={esc(value)}))"


def disabled_filter(profile: Profile, attr: str, value: str) -> str | None:
    if profile.disabled is None:
        return None
    return f"(&{profile.user_class}({attr}={esc(value)}){profile.disabled})"


def membership_filter(profile: Profile, dn: str, login: str, group_dns=()) -> str | None:
    """The groups an account belongs to (None: it belongs to none)."""
    if profile.membership == "member":
        return (f"(&{profile.group_class}(|(member={esc(dn)})(uniqueMember={esc(dn)})"
                f"(memberUid={esc(login)})))")
    if profile.membership == "in_chain":
        return f"(&{profile.group_class}(member:1.2.840.113556.1.4.1941:={esc(dn)}))"
    if not group_dns:
        return None
    return f"(&{profile.group_class}(|{''.join(f'(entrydn={esc(g)})' for g in group_dns)}))"


def wildcard(text: str) -> str:
    """A search value where '*' is a wildcard and nothing else is special."""
    return "*".join(esc(part) for part in text.split("*"))


def user_search_filter(profile: Profile, attr: str, text: str) -> str:
    """Accounts whose login, first or last name matches `text` ('*': wildcard)."""
    v = wildcard(text or "*")
    return (f"(&{profile.user_class}(|({attr}={v})({profile.first_name}={v})({profile.last_name}={v})))")


def group_search_filter(profile: Profile, text: str) -> str:
    return f"(&{profile.group_class}({profile.group_name}={wildcard(text or '*')}))"


def id_filter(profile: Profile, attr: str, external_id: str, user: bool) -> str:
    cls = profile.user_class if user else profile.group_class
    if profile.binary_ids:
        try:
            raw = uuid.UUID(external_id).bytes_le
        except ValueError:
            return f"(&{cls}(objectClass=keelNoSuchEntry))"
        escaped = "".join("\\%02x" % b for b in raw)
        return f"(&{cls}({attr}={escaped}))"
    return f"(&{cls}({attr}={esc(external_id)}))"


def external_id(profile: Profile, raw) -> str | None:
    """The directory's id as text: objectGUID's 16 bytes as a UUID."""
    if raw is None or raw == [] or raw == b"":
        return None
    if isinstance(raw, list):
        raw = raw[0]
    if profile.binary_ids and isinstance(raw, (bytes, bytearray)) and len(raw) == 16:
        return str(uuid.UUID(bytes_le=bytes(raw)))
    return raw.decode() if isinstance(raw, (bytes, bytearray)) else str(raw)
