"""Helpers of the dashboard's tests: signing in over HTTP and in a browser, reading a
page's CSRF token."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page

from app.ui.session import CSRF_FIELD

_CSRF = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


async def sign_in(http: httpx.AsyncClient, key: str, next_path: str = "/ui/tasks") -> str:
    """Sign `http` in with `key` and return the session's CSRF token."""
    response = await http.post("/ui/signin", data={"key": key, "next": next_path})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == next_path
    page = await http.get(next_path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def browser_sign_in(page: Page, base: str, key: str, path: str = "/ui/tasks") -> None:
    """Open `path` in the browser, which sends it to the sign-in form, and sign in there."""
    await page.goto(base + path)
    assert "/ui/signin" in page.url
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + path)
