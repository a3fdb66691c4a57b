"""Typed, validated access to a parsed request body (XML or JSON, same shape).

Every getter names the exact field in its error, so a client sees e.g.
"memory: expected an integer number of bytes, got 'lots'"."""
import re

from ..errors import bad_request

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Body:
    def __init__(self, data, prefix=""):
        self.data = data if isinstance(data, dict) else {}
        self.prefix = prefix

    def _name(self, key):
        return f"{self.prefix}{key}"

    def has(self, key):
        return self.data.get(key) not in (None, "", {})

    def sub(self, key):
        value = self.data.get(key)
        if value is None or value == "":
            return Body({}, f"{self._name(key)}.")
        if not isinstance(value, dict):
            raise bad_request(f"{self._name(key)}: expected an element with fields")
        return Body(value, f"{self._name(key)}.")

    def str(self, key, required=False, default=None, maxlen=1024, choices=None):
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise bad_request(f"{self._name(key)}: required field is missing")
            return default
        if isinstance(value, (dict, list)):
            raise bad_request(f"{self._name(key)}: expected text")
        value = str(value)
        if len(value) > maxlen:
            raise bad_request(f"{self._name(key)}: longer than {maxlen} characters")
        if choices and value not in choices:
            raise bad_request(f"{self._name(key)}: expected one of {', '.join(choices)}, got '{value}'")
        return value

    def name(self, key="name", required=True, default=None):
        value = self.str(key, required=required, default=default, maxlen=64)
        if value is not None and not NAME_RE.match(value):
            raise bad_request(f"{self._name(key)}: '{value}' is not a valid name "
                              "(1-64 letters, digits, '_', '-', '.')")
        return value

    def int(self, key, required=False, default=None, minimum=None, maximum=None):
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise bad_request(f"{self._name(key)}: required field is missing")
            return default
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()))):
            raise bad_request(f"{self._name(key)}: expected an integer, got '{value}'")
        value = int(value)
        if minimum is not None and value < minimum:
            raise bad_request(f"{self._name(key)}: must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise bad_request(f"{self._name(key)}: must be at most {maximum}, got {value}")
        return value

    def bool(self, key, default=None):
        value = self.data.get(key)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad_request(f"{self._name(key)}: expected true or false, got '{value}'")

    def ref(self, key, required=False):
        """A reference: <cluster id="..."/> or <cluster><name>x</name></cluster>.
        Returns (id, name) or None."""
        value = self.data.get(key)
        if value is None or value == "" or value == {}:
            if required:
                raise bad_request(f"{self._name(key)}: required reference is missing (give id or name)")
            return None
        if not isinstance(value, dict):
            raise bad_request(f"{self._name(key)}: expected a reference with an id attribute or a name")
        ident, name = value.get("id"), value.get("name")
        if not ident and not name:
            raise bad_request(f"{self._name(key)}: reference needs an id or a name")
        if ident is not None and not isinstance(ident, str):
            raise bad_request(f"{self._name(key)}.id: expected text")
        if name is not None and not isinstance(name, str):
            raise bad_request(f"{self._name(key)}.name: expected text")
        return ident, name

    def list(self, wrapper, tag):
        """<wrapper><tag/>...</wrapper> -> list of Body."""
        value = self.data.get(wrapper)
        if value in (None, "", {}):
            return []
        if not isinstance(value, dict):
            raise bad_request(f"{self._name(wrapper)}: expected a list of {tag}")
        items = value.get(tag, [])
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad_request(f"{self._name(wrapper)}.{tag}: expected elements")
        return [Body(i, f"{self._name(wrapper)}.{tag}.") for i in items]
