"""What the browser tests do again and again: sign in through the pages, check the markup."""

from __future__ import annotations

import base64
from urllib.parse import urlparse

import httpx
import pyotp
from playwright.sync_api import Page

from tests.live_server import LiveServer
from tests.support import PASSWORD, Person

#: Every visible form control must have a label a screen reader announces.
UNLABELLED_CONTROLS_SCRIPT = """
() => Array.from(document.querySelectorAll("input, select, textarea"))
  .filter((control) => control.type !== "hidden")
  .filter((control) => control.labels.length === 0
                       && !control.getAttribute("aria-label")
                       && !control.getAttribute("aria-labelledby"))
  .map((control) => control.outerHTML)
"""

#: Text whose contrast against its effective background is below WCAG AA (4.5:1).
LOW_CONTRAST_SCRIPT = """
() => {
  const channels = (colour) => {
    const parts = colour.match(/[\\d.]+/g).map(Number);
    return {r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1};
  };
  const luminance = ({r, g, b}) => {
    const linear = [r, g, b].map((value) => {
      const s = value / 255;
      return s <= 0.03928 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  };
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = channels(getComputedStyle(node).backgroundColor);
      if (colour.a > 0.5) return colour;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  };
  const failures = [];
  for (const element of document.querySelectorAll("body *")) {
    const ownText = Array.from(element.childNodes)
      .some((node) => node.nodeType === Node.TEXT_NODE && node.textContent.trim());
    const box = element.getBoundingClientRect();
    const style = getComputedStyle(element);
    if (!ownText || box.width === 0 || style.visibility === "hidden"
        || box.right < 0 || box.bottom < 0) continue;
    const front = luminance(channels(style.color));
    const back = luminance(background(element));
    const ratio = (Math.max(front, back) + 0.05) / (Math.min(front, back) + 0.05);
    if (ratio < 4.5) failures.push(`${element.tagName}.${element.className}: ${ratio.toFixed(2)}`);
  }
  return failures;
}
"""


def sign_in(page: Page, person: Person, password: str = PASSWORD) -> None:
    """Sign in through the login page, and the two-factor page when the role needs it."""
    page.goto("/login")
    page.fill("#email", person.email)
    page.fill("#password", password)
    page.click("main button[type=submit]")
    if person.totp_secret:
        page.wait_for_url("**/login/two-factor**")
        page.fill("#code", pyotp.TOTP(person.totp_secret).now())
        page.click("main button[type=submit]")
    wait_for_path(page, "/")


def wait_for_path(page: Page, path: str) -> None:
    page.wait_for_url(lambda url: urlparse(url).path == path)


def unlabelled_controls(page: Page) -> list[str]:
    result: list[str] = page.evaluate(UNLABELLED_CONTROLS_SCRIPT)
    return result


def low_contrast_text(page: Page) -> list[str]:
    result: list[str] = page.evaluate(LOW_CONTRAST_SCRIPT)
    return result


def client_token(live_server: LiveServer, credentials: tuple[str, str],
                 scope: str = "monitoring.write") -> str:
    """A system client's bearer token from the running server (client credentials grant)."""
    basic = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    response = httpx.post(live_server.path("/oauth2/token"),
                          data={"grant_type": "client_credentials", "scope": scope},
                          headers={"Authorization": f"Basic {basic}"}, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
