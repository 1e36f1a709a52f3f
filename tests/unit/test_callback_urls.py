"""What a callback URL must be (reminderd/callback_urls.py): each step of the rule in its words
(the cases are tests/support.py's CALLBACK_URLS), and the one-line refusals of the command line
and the API. SQL keeps the same rule in the same words: tests/integration/test_callback_urls_sql.py.
"""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest
from support import CALLBACK_URLS

from reminderd.callback_urls import SPACE_OR_CONTROL, idna_form, problem
from reminderd.exceptions import InvalidInput
from reminderd.validation import checked_callback_url


@pytest.mark.parametrize(("url", "wrong"), CALLBACK_URLS)
def test_each_step_of_the_rule_says_what_is_wrong(url: str, wrong: str | None) -> None:
    assert problem(url) == wrong


def test_the_spaces_and_control_characters_are_every_one_python_knows() -> None:
    """The class SQL repeats character for character: every character Python calls a space or a
    control character, and no other."""
    every = [chr(code) for code in range(sys.maxunicode + 1)]
    listed = set(re.findall(f"[{SPACE_OR_CONTROL}]", "".join(every)))
    known = {c for c in every if c.isspace() or unicodedata.category(c) == "Cc"}
    assert listed == known
    assert {problem(f"http://h.example/{c}") for c in known} == {"has a space or a control character"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "--callback-url 'ftp://x': use an http:// or https:// URL, like https://example.com/hooks"),
        ("http://example.com:1234567/cb",
         "--callback-url 'http://example.com:1234567/cb' has port \"1234567\": a port is 1 to 65535"),
        ("http://a b.example/cb", "--callback-url 'http://a b.example/cb' has a space or a control character"),
        ("http://exa..mple.com/cb",
         "--callback-url 'http://exa..mple.com/cb' has host \"exa..mple.com\" with an empty label"),
        ("http://a\nb/", "--callback-url 'http://a\\nb/' has a space or a control character"),  # one line
    ],
)
def test_the_command_line_refuses_in_one_line_naming_the_flag(url: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        checked_callback_url(url)
    assert str(refused.value) == message
    assert "\n" not in str(refused.value)


def test_the_api_names_its_field() -> None:
    with pytest.raises(InvalidInput, match=r"^callback_url 'http://h:0/' has port \"0\""):
        checked_callback_url("http://h:0/", "callback_url")
    assert checked_callback_url("https://hooks.example.com/cb", "callback_url") == "https://hooks.example.com/cb"
    assert checked_callback_url(None) is None


def test_an_international_name_is_refused_in_one_line_giving_its_idna_form() -> None:
    with pytest.raises(InvalidInput) as refused:
        checked_callback_url("https://user:pw@Bücher.example:8443/hook?x=ü", "callback_url")
    assert str(refused.value) == (
        "callback_url 'https://user:pw@Bücher.example:8443/hook?x=ü' has host \"Bücher.example\" with \"ü\""
        " (U+00FC), which a host name cannot have: write an international name in its IDNA form (xn--)"
        " (as https://user:pw@xn--bcher-kva.example:8443/hook?x=ü)")
    assert idna_form("https://bücher.example/hook") == "https://xn--bcher-kva.example/hook"
    assert idna_form("https://\u00ad.example/hook") is None  # no IDNA form: no suggestion
    assert problem(idna_form("https://ü.example./h") or "") is None


def test_the_daemon_still_takes_an_international_name_written_before_0039() -> None:
    assert problem("https://bücher.example/hook", international=True) is None
    assert problem("https://bücher.xn--zz.example/hook", international=True) == (
        'has host "bücher.xn--zz.example" with label "xn--zz", which is not a valid IDNA A-label (punycode)')
    assert problem("http://\u00ad.example/cb", international=True) == (
        'has host "\\u00ad.example", which is not an international domain name (IDNA)')
