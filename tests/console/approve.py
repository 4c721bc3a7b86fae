"""An approver's first visit to the console, in a real browser.

Headless Chromium (Debian's, driven by Playwright for Python) with a
virtual WebAuthn authenticator: register a passkey with the enrollment
code, sign in, read the held request and its blast radius, approve it with
the passkey. On the way it checks what a page must never allow: a POST
without the CSRF token or from another origin, and a decision without a
passkey's proof. Any failure exits non-zero; a browser that cannot start
is a failure, never a skip.

Environment: CONSOLE (http://localhost:PORT/console), APPROVER, CODE,
APPROVAL (the held request's id), VOUCHER and VOUCHER_CODE (an enrolled
approver and a code of theirs, to vouch for VOUCH_FOR, a comma-separated
list that includes APPROVER), VOUCH_IN_CONSOLE (an approver whose factor
awaits a vouch, which APPROVER gives in the console), SHOTS (where
screenshots go).
"""

import json
import os
import sys

from playwright.sync_api import expect, sync_playwright

CONSOLE = os.environ["CONSOLE"]
APPROVER = os.environ["APPROVER"]
CODE = os.environ["CODE"]
APPROVAL = os.environ["APPROVAL"]
SHOTS = os.environ["SHOTS"]
VOUCHER = os.environ["VOUCHER"]
VOUCHER_CODE = os.environ["VOUCHER_CODE"]
VOUCH_FOR = os.environ["VOUCH_FOR"].split(",")
VOUCH_IN_CONSOLE = os.environ["VOUCH_IN_CONSOLE"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def post(page, path, body, csrf=True):
    """A fetch from the page itself: (status, answer)."""
    return page.evaluate(
        """async ([url, body, csrf]) => {
            const headers = { "Content-Type": "application/json" };
            if (csrf) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf"]').content;
            const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
            return [r.status, await r.json().catch(() => null)];
        }""",
        [CONSOLE + path, body, csrf],
    )


def main():
    os.makedirs(SHOTS, exist_ok=True)
    checks = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                }
            },
        )

        # Enroll: the admin's one-time code, then the approver's own passkey.
        response = page.goto(CONSOLE + "/enroll")
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, csp
        assert "unsafe-inline" not in csp, csp
        page.fill("#approver", APPROVER)
        page.fill("#code", CODE)
        page.click("button[type=submit]")
        page.wait_for_url(CONSOLE + "/signin", timeout=15000)

        # Registered by whoever held the code, it is no approver's until an
        # enrolled approver vouches for it: signing in is refused.
        page.fill("#approver", APPROVER)
        page.click("button[type=submit]")
        expect(page.locator("#message")).to_contain_text("vouch")
        checks["unvouched_signin"] = "refused"
        vouched = context.request.post(
            CONSOLE.rsplit("/console", 1)[0] + "/v1/approvers/vouch",
            data=json.dumps({"approver": VOUCHER, "code": VOUCHER_CODE, "approvers": VOUCH_FOR}),
            headers={"Content-Type": "application/json"},
        )
        assert vouched.status == 200, (vouched.status, vouched.text())

        # Sign in with it.
        page.fill("#approver", APPROVER)
        page.click("button[type=submit]")
        page.wait_for_url(CONSOLE + "/approvals", timeout=15000)
        cookie = next(c for c in context.cookies() if c["name"] == "vk_console")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie
        checks["cookie"] = {k: cookie[k] for k in ("httpOnly", "secure", "sameSite", "path")}

        # The queue shows the held request, and the factor another approver
        # registered: alice vouches for it with her passkey.
        expect(page.locator(".queue").first).to_contain_text("volumeDelete")
        waiting = page.locator('[data-vouch="%s"]' % VOUCH_IN_CONSOLE)
        expect(waiting).to_contain_text("totp registered")
        page.screenshot(path=os.path.join(SHOTS, "queue.png"), full_page=True)
        waiting.locator("button").click()
        expect(page.locator("#message")).to_contain_text("in use now", timeout=15000)
        page.wait_for_load_state("load")
        expect(page.locator('[data-vouch="%s"]' % VOUCH_IN_CONSOLE)).to_have_count(0, timeout=15000)
        checks["console_vouch"] = VOUCH_IN_CONSOLE

        # What must be refused: no CSRF token, another origin, no passkey.
        status, answer = post(page, "/approvals/" + APPROVAL + "/start", {"verdict": "approve"}, csrf=False)
        assert status == 403, (status, answer)
        checks["no_csrf"] = status
        token = page.locator('meta[name="csrf"]').get_attribute("content")
        foreign = context.request.post(
            CONSOLE + "/approvals/" + APPROVAL + "/start",
            headers={"Origin": "http://evil.example", "X-CSRF-Token": token, "Content-Type": "application/json"},
            data=json.dumps({"verdict": "approve"}),
        )
        assert foreign.status == 403, foreign.status
        checks["other_origin"] = foreign.status
        status, started = post(page, "/approvals/" + APPROVAL + "/start", {"verdict": "approve"})
        assert status == 200, (status, started)
        forged = {
            "id": "AAAA",
            "rawId": "AAAA",
            "type": "public-key",
            "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "AAAA", "userHandle": None},
        }
        status, answer = post(
            page, "/approvals/" + APPROVAL + "/finish", {"ceremony": started["ceremony"], "credential": forged}
        )
        assert status in (400, 401), (status, answer)
        checks["no_proof"] = status

        # The request, its blast radius, and the approval with the passkey.
        page.goto(CONSOLE + "/approvals/" + APPROVAL)
        radius = page.locator("table.radius")
        expect(radius).to_contain_text("vol_db")
        expect(radius).to_contain_text("staging and production")
        expect(radius).to_contain_text("shared")
        expect(page.locator("#status")).to_have_text("pending")
        page.screenshot(path=os.path.join(SHOTS, "approval.png"), full_page=True)
        page.click("button.approve")
        expect(page.locator(".facts")).to_contain_text("1 of 2 (alice)", timeout=15000)
        page.screenshot(path=os.path.join(SHOTS, "approved.png"), full_page=True)

        # The other pages: live sessions, the audit trail and its chain, the
        # permission report.
        page.goto(CONSOLE + "/sessions")
        expect(page.locator("table.list")).to_contain_text("claude")
        origin = CONSOLE.rsplit("/console", 1)[0]
        forged_form = context.request.post(
            CONSOLE + "/sessions/any/revoke", headers={"Origin": origin}, form={"csrf": "not-the-token"}
        )
        assert forged_form.status == 403, forged_form.status
        checks["form_without_csrf"] = forged_form.status
        page.goto(CONSOLE + "/audit?type=approval_granted")
        expect(page.locator("p.chain")).to_have_class("chain intact")
        expect(page.locator("table.list")).to_contain_text("approver:alice")
        page.screenshot(path=os.path.join(SHOTS, "audit.png"), full_page=True)
        page.goto(CONSOLE + "/report")
        expect(page.locator("table.findings")).to_contain_text("the audit chain is intact")

        # On a phone's width it stays readable.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(CONSOLE + "/approvals/" + APPROVAL)
        page.screenshot(path=os.path.join(SHOTS, "approval-phone.png"), full_page=True)
        browser.close()
    print(json.dumps(checks))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test reads why
        print("console check failed: %r" % (e,), file=sys.stderr)
        sys.exit(1)
