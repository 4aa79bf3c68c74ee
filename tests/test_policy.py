"""Policies over the whole URL map: a route added tomorrow that breaks one fails here.

Only the CSRF allow-list and the login-ish set are written by hand; everything else is found by
walking app.url_map."""

from typing import Any

import pytest
from quart import Quart
from quart_rate_limiter import QUART_RATE_LIMITER_LIMITS_ATTRIBUTE
from werkzeug.routing import IntegerConverter, Rule

from storefront.web.csrf import check_csrf
from storefront.web.security import per_minute
from tests.conftest import CSRF_TOKEN

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# The one endpoint that proves itself another way (the webhook's HMAC signature).
CSRF_ALLOW_LIST = {"paystack_webhook.webhook"}
# Routes whose POST guesses something (a password, an account, a coupon) or starts a payment,
# and the submissions a minute each allows one client address (declared on the view).
LOGIN_ISH_LIMITS = {
    "/login": 10,
    "/register": 5,
    "/password/forgot": 5,
    "/password/reset/<token>": 10,
    "/api/validate-coupon": 30,
    "/cart/coupon": 30,
    "/pay/wallet": 10,
    "/paystack/init": 10,
    "/paystack/orders/<number>/pay": 10,
    "/account/wallet/topup": 10,
}
LOGIN_ISH_ROUTES = set(LOGIN_ISH_LIMITS)
# Words that make a new POST route login-ish even if nobody adds it to the set above.
LOGIN_ISH_WORDS = ("login", "register", "password", "signin", "signup", "validate", "topup")
LOGIN_ISH_PREFIXES = ("/pay/", "/paystack/")
LOGIN_REQUIRED_EXACT = {"/account", "/checkout"}
LOGIN_REQUIRED_PREFIXES = ("/account/", "/checkout/", "/pay/", "/orders/")
SAMPLE_ARGUMENTS = {"token": "sample-token", "number": "CW-000001"}


def rules(app: Quart) -> list[Rule]:
    return [rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]


def view_of(app: Quart, rule: Rule) -> Any:
    return app.view_functions[rule.endpoint]


def sample_url(rule: Rule) -> str:
    """A concrete URL for the rule, with plausible values for its arguments."""
    values: dict[str, Any] = {}
    for name in rule.arguments:
        converter = rule._converters[name]
        values[name] = (
            1 if isinstance(converter, IntegerConverter) else SAMPLE_ARGUMENTS.get(name, "1")
        )
    return rule.build(values)[1]


def unsafe_methods(rule: Rule) -> set[str]:
    return set(rule.methods or ()) & UNSAFE_METHODS


def needs_login(path: str) -> bool:
    return path in LOGIN_REQUIRED_EXACT or path.startswith(LOGIN_REQUIRED_PREFIXES)


def looks_login_ish(path: str) -> bool:
    lowered = path.lower()
    return any(word in lowered for word in LOGIN_ISH_WORDS) or lowered.startswith(
        LOGIN_ISH_PREFIXES
    )


def limits_of(view: Any) -> list[Any]:
    return getattr(view, QUART_RATE_LIMITER_LIMITS_ATTRIBUTE, [])


def test_csrf_check_runs_before_every_request(app):
    assert check_csrf in app.before_request_funcs[None]


def test_only_the_webhook_may_skip_csrf(app):
    exempt = {
        rule.endpoint
        for rule in rules(app)
        if unsafe_methods(rule) and getattr(view_of(app, rule), "csrf_exempt", False)
    }
    assert exempt <= CSRF_ALLOW_LIST, f"CSRF-exempt routes outside the allow-list: {exempt}"


async def test_every_unsafe_route_refuses_a_request_without_a_valid_token(app, make_user, sign_in):
    admin = await make_user(role="owner")
    checked = []
    for rule in rules(app):
        if rule.endpoint in CSRF_ALLOW_LIST:
            continue
        for method in sorted(unsafe_methods(rule)):
            url = sample_url(rule)
            for signed_in in (False, True):
                client = app.test_client()
                async with client.session_transaction() as session:
                    session["csrf_token"] = CSRF_TOKEN
                if signed_in:
                    sign_in(client, admin)
                for form in ({}, {"csrf_token": "not-the-token"}):
                    response = await client.open(url, method=method, form=form)
                    body = await response.get_data(as_text=True)
                    assert response.status_code == 403, (method, url, form, signed_in)
                    assert "did not come from this shop" in body, (method, url)
                response = await client.open(
                    url,
                    method=method,
                    form={"csrf_token": CSRF_TOKEN},
                    headers={"Origin": "https://evil.example"},
                )
                assert response.status_code == 403, (method, url, "cross-site")
            checked.append(f"{method} {rule.rule}")
    assert "POST /login" in checked and "POST /logout" in checked


def test_every_account_checkout_payment_and_order_route_requires_login(app):
    guarded = [rule for rule in rules(app) if needs_login(rule.rule)]
    assert any(rule.rule == "/account" for rule in guarded)
    wrong = [
        rule.rule
        for rule in guarded
        if getattr(view_of(app, rule), "requires", None) not in {"login", "staff", "owner"}
    ]
    assert wrong == [], f"routes that should need login: {wrong}"


async def test_anonymous_visitors_are_sent_to_login_from_every_guarded_route(client):
    app = client.app
    for rule in rules(app):
        if not (needs_login(rule.rule) or rule.rule.startswith("/admin")):
            continue
        url = sample_url(rule)
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            form = {"csrf_token": CSRF_TOKEN} if method in UNSAFE_METHODS else None
            response = await client.open(url, method=method, form=form)
            assert response.status_code == 303, (method, url)
            assert response.headers["Location"].startswith("/login?next="), (method, url)
            response = await client.open(
                url, method=method, form=form, headers={"HX-Request": "true"}
            )
            assert response.status_code == 204, (method, url)
            assert response.headers["HX-Redirect"].startswith("/login?next="), (method, url)


def test_every_login_ish_route_is_registered_and_rate_limited(app):
    posts = {rule.rule: rule for rule in rules(app) if "POST" in (rule.methods or ())}
    missing = sorted(LOGIN_ISH_ROUTES - set(posts))
    assert missing == [], f"login-ish routes not registered (yet?): {missing}"
    unlimited = sorted(
        path for path in LOGIN_ISH_ROUTES if not limits_of(view_of(app, posts[path]))
    )
    assert unlimited == [], f"login-ish routes without a rate limit: {unlimited}"


def test_new_login_ish_routes_are_caught_by_name(app):
    unlimited = sorted(
        rule.rule
        for rule in rules(app)
        if unsafe_methods(rule)
        and looks_login_ish(rule.rule)
        and rule.endpoint not in CSRF_ALLOW_LIST  # Paystack's servers, proven by HMAC
        and not limits_of(view_of(app, rule))
    )
    assert unlimited == [], f"POST routes that look login-ish but have no rate limit: {unlimited}"


def test_login_ish_routes_declare_their_own_limits(app):
    posts = {rule.rule: rule for rule in rules(app) if "POST" in (rule.methods or ())}
    declared = {
        path: limits_of(view_of(app, posts[path])) for path in LOGIN_ISH_LIMITS if path in posts
    }
    assert declared == {path: per_minute(count) for path, count in LOGIN_ISH_LIMITS.items()}


def test_only_login_ish_posts_and_the_paystack_callback_are_limited(app):
    limited = {rule.rule for rule in rules(app) if limits_of(view_of(app, rule))}
    assert limited == LOGIN_ISH_ROUTES | {"/paystack/callback"}


def test_limits_are_added_once_however_many_apps_are_made(app):
    from storefront import create_app

    create_app({"SECRET_KEY": "another-test-secret-key-0123456789abcdef"})
    login_view = app.view_functions["account.login"]
    assert limits_of(login_view) == per_minute(LOGIN_ISH_LIMITS["/login"])


@pytest.mark.parametrize("path", ["/login", "/register", "/password/forgot"])
async def test_showing_a_login_ish_form_is_never_limited(client, path):
    for _ in range(15):
        assert (await client.get(path)).status_code == 200
