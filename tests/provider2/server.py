"""A second, independent OpenID provider for oidc-bff's tests.

The OpenID Connect logic (authorization request validation, codes, PKCE,
client authentication, ID tokens, access and refresh tokens, userinfo,
logout) is IdentityPython's pyop library (PyPI); this file only puts it on
HTTP with Flask, as pyop's own example does, and adds a login form.

It serves HTTPS only (pyop refuses an http issuer), with a certificate the
caller gives it. TEST-ONLY: in-memory storage, a fresh signing key per start, any loopback
redirect URI accepted, and every user's password is "<name>-password".

stdout carries exactly one line, the ready line (JSON with "issuer");
everything else goes to stderr. See README.md beside this file.
"""

import argparse
import html
import json
import logging
import re
import sys
from urllib.parse import urlencode

from Cryptodome.PublicKey import RSA
from flask import Flask, Response, jsonify, redirect, request
from jwkest.jwk import RSAKey
from oic.oic.message import EndSessionRequest
from pyop.authz_state import AuthorizationState
from pyop.exceptions import (
    BearerTokenError,
    InvalidAccessToken,
    InvalidAuthenticationRequest,
    InvalidClientAuthentication,
    OAuthError,
)
from pyop.provider import Provider
from pyop.subject_identifier import HashBasedSubjectIdentifierFactory
from pyop.userinfo import Userinfo
from werkzeug.serving import make_server

CLIENT_ID = "oidc-bff"
CLIENT_SECRET = "oidc-bff-secret"
USER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class LoopbackURIs:
    """Registered redirect URIs: any http URL on a loopback address (the
    gateways under test listen on random ports)."""

    PATTERN = re.compile(r"^http://(127\.0\.0\.1|localhost)(:\d+)?(/[^\s#]*)?$")

    def __contains__(self, uri):
        return isinstance(uri, str) and bool(self.PATTERN.match(uri))

    def __iter__(self):
        return iter(())


def build_provider(issuer, access_ttl, refresh_ttl):
    key = RSAKey(key=RSA.generate(2048), alg="RS256", kid="provider2-1")
    config = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "userinfo_endpoint": issuer + "/userinfo",
        "end_session_endpoint": issuer + "/logout",
        "jwks_uri": issuer + "/jwks",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "name", "email", "email_verified"],
    }
    clients = {
        CLIENT_ID: {
            "client_secret": CLIENT_SECRET,
            "redirect_uris": LoopbackURIs(),
            "post_logout_redirect_uris": LoopbackURIs(),
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }
    }
    state = AuthorizationState(
        HashBasedSubjectIdentifierFactory("provider2-test-salt"),
        authorization_code_db={},
        access_token_db={},
        refresh_token_db={},
        subject_identifier_db={},
        access_token_lifetime=access_ttl,
        refresh_token_lifetime=refresh_ttl,
        # Rotate the refresh token on every refresh.
        refresh_token_threshold=refresh_ttl,
    )
    users = {}
    return Provider(key, config, state, clients, Userinfo(users)), users


def oauth_error(error, description, status=400):
    body = {"error": error, "error_description": description}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def create_app(provider, users):
    app = Flask("provider2")

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify(provider.provider_configuration.to_dict())

    @app.get("/jwks")
    def jwks():
        return jsonify(provider.jwks)

    @app.get("/authorize")
    def authorize():
        query = request.query_string.decode()
        try:
            provider.parse_authentication_request(query, request.headers)
        except InvalidAuthenticationRequest as e:
            # Unknown client or unregistered redirect URI: never redirect.
            return oauth_error("invalid_request", str(e))
        # The login page carries the authorization request along.
        return Response(
            "<!doctype html><title>provider2 login</title>"
            '<form method="post" action="/login">'
            f'<input type="hidden" name="request" value="{html.escape(query)}">'
            '<input name="login"> <input name="password" type="password">'
            "<button>Sign in</button></form>",
            mimetype="text/html",
        )

    @app.post("/login")
    def login():
        query = request.form.get("request", "")
        try:
            auth_req = provider.parse_authentication_request(query, request.headers)
        except InvalidAuthenticationRequest as e:
            return oauth_error("invalid_request", str(e))
        user = request.form.get("login", "")
        if not USER_NAME.match(user) or request.form.get("password") != f"{user}-password":
            return Response("wrong user name or password", status=401)
        users[user] = {
            "sub": user,
            "name": user.capitalize() + " Example",
            "email": f"{user}@example.com",
            "email_verified": True,
        }
        response = provider.authorize(auth_req, user)
        return redirect(response.request(auth_req["redirect_uri"], False), 303)

    @app.post("/token")
    def token():
        try:
            response = provider.handle_token_request(
                request.get_data(as_text=True), request.headers
            )
        except InvalidClientAuthentication as e:
            return oauth_error("invalid_client", str(e), 401)
        except OAuthError as e:
            return oauth_error(e.oauth_error, str(e))
        out = Response(response.to_json(), mimetype="application/json")
        out.headers["Cache-Control"] = "no-store"
        return out

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo():
        body = request.get_data(as_text=True) or request.query_string.decode()
        try:
            response = provider.handle_userinfo_request(body, request.headers)
        except (BearerTokenError, InvalidAccessToken) as e:
            out = Response(status=401)
            out.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{e}"'
            return out
        return jsonify(response.to_dict())

    @app.route("/logout", methods=["GET", "POST"])
    def logout():
        params = request.values.to_dict()
        end_session = EndSessionRequest().from_dict(params)
        try:
            # Ends the user's state at the provider: their access and refresh
            # tokens stop working.
            provider.logout_user(end_session_request=end_session)
        except Exception as e:  # noqa: BLE001 - a bad hint is the client's error
            return oauth_error("invalid_request", f"end session: {e}")
        target = provider.do_post_logout_redirect(end_session)
        if target:
            return redirect(target, 303)
        return Response("<!doctype html><title>signed out</title>signed out", mimetype="text/html")

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    # pyop (through oic) insists on an https issuer, as OpenID Discovery does.
    parser.add_argument("--tls-cert", required=True, help="server certificate (PEM) for 127.0.0.1")
    parser.add_argument("--tls-key", required=True, help="its private key (PEM)")
    parser.add_argument("--access-token-ttl", type=int, default=3600)
    parser.add_argument("--refresh-token-ttl", type=int, default=86400)
    args = parser.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    # werkzeug's request log would print codes and tokens in query strings.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Bind first: the issuer names the port.
    app = Flask("placeholder")
    server = make_server(
        "127.0.0.1", args.port, app, threaded=True, ssl_context=(args.tls_cert, args.tls_key)
    )
    issuer = f"https://127.0.0.1:{server.server_port}"
    provider, users = build_provider(issuer, args.access_token_ttl, args.refresh_token_ttl)
    server.app = create_app(provider, users)
    print(json.dumps({"issuer": issuer}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
