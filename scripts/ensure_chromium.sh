#!/bin/sh
# Install Debian's `chromium` for the browser test of the HTML report
# (tests/test_html_report.py) when it is missing and apt-get can run here.
# Idempotent, and it never fails the test run: without chromium that test is skipped
# and says why.
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi
say() { echo "ensure_chromium: $*" >&2; }
if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get on this machine: the HTML report's browser test will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        say "not root and no password-less sudo: the HTML report's browser test will be skipped"
        exit 0
    fi
fi
say "installing chromium with apt-get (for the HTML report's browser test)"
APT="timeout 900 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Acquire::Retries=1 -o Acquire::http::Timeout=30"
if $APT update >/dev/null 2>&1 && $APT install -y chromium >/dev/null 2>&1; then
    say "chromium installed"
else
    say "apt-get could not install chromium (offline?): the HTML report's browser test will be skipped"
fi
exit 0
