"""Signing in to the web UI with Flask's test client, as a browser does:
the sign-in form's own token, then the form."""
import re


def form_token(page_text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page_text).group(1)


def sign_in(client, username, password, next_page="/ui/"):
    nonce = form_token(client.get("/ui/signin").text)
    return client.post("/ui/signin", data={"csrf": nonce, "username": username, "password": password,
                                           "next": next_page})
