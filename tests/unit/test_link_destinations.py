"""Which URLs a short link may lead to (SPEC 6): `service.links.is_allowed_destination`."""

from __future__ import annotations

import pytest

from service.links import is_allowed_destination, is_link_previewer

ALLOWED = [
    "https://shop.example/sale",
    "http://shop.example",
    "HTTPS://SHOP.EXAMPLE/Sale?ref=sms#top",
    "https://www.shop.example:8443/a",
    "https://shop.example./trailing-dot",
    "https://bücher.example/",  # an IDN host
    "https://xn--bcher-kva.example/",
    "https://123.shop.example/",  # numeric labels are fine, except the last
    "https://shop.example/path/with@at-sign",  # "@" in the path is not a credential
    "https://a-b.shop.example/",
]

REFUSED = [
    # not http(s), or no host
    "ftp://shop.example/file",
    "javascript://shop.example/%0aalert(1)",
    "http:///shop.example",
    "https://",
    "file:///etc/passwd",
    "mailto:someone@shop.example",
    # credentials
    "https://user:pass@shop.example/",
    "https://user@shop.example/",
    "https://shop.example\\@evil.example/",
    "https://shop.example@evil.example/",
    # IPv4 in every form a browser reads as one
    "http://127.0.0.1/",
    "http://10.0.0.1:8080/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://1.2.3.4./",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # full-width digits: 127.0.0.1
    "http://127\u30020\u30020\u30021/",  # ideographic full stops
    "http://%31%32%37.0.0.1/",  # browsers percent-decode hosts
    # IPv6
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fe80::1%25eth0]/",
    "http://[2001:db8::1]:8080/x",
    "http://[v1.fe]/",  # IPvFuture
    "http://[v7.localhost.com]/",
    # characters newer than IDNA 2003 that a browser maps (UTS #46) to an IP or a local name
    "http://127.0.0.\U0001fbf1:18100/health",  # segmented digit one
    "http://"
    + ".".join(["".join(chr(0x1FBF0 + int(d)) for d in n) for n in "169.254.169.254".split(".")]),
    # a.localhost, in squared capital letters
    "http://a." + "".join(chr(0x1F130 + ord(c) - ord("a")) for c in "localhost") + "/",
    "http://printer.\U0001f13b\U0001f13e\U0001f132\U0001f130\U0001f13b/",  # printer.local
    # local names and single labels
    "http://localhost/",
    "http://LOCALHOST:8000/",
    "http://localhost./",
    "http://a.localhost/",
    "http://printer.local/",
    "http://metadata.google.internal/",
    "http://router.home.arpa/",
    "http://localhost.localdomain/",
    "http://shop.test/",
    "http://shop.invalid/",
    "http://shop.onion/",
    "http://nas.lan/",
    "http://intranet/",
    "https://com/",
    # not a host name
    "http://shop..example/",
    "http://-shop.example/",
    "http://sh op.example/",
    "http://" + "x" * 64 + ".example/",
    "http://shop.example:99999/",
    "http://shop.example:x/",
]


@pytest.mark.parametrize("url", ALLOWED)
def test_a_public_http_url_with_a_host_name_is_allowed(url):
    assert is_allowed_destination(url)


@pytest.mark.parametrize("url", REFUSED)
def test_other_urls_are_refused(url):
    assert not is_allowed_destination(url)


@pytest.mark.parametrize(
    "user_agent",
    [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "facebookexternalhit/1.1;line-poker/1.0",
        "Mozilla/5.0 (Macintosh) AppleWebKit (KHTML, like Gecko) facebookexternalhit/1.1"
        " Facebot Twitterbot/1.0",  # iMessage previews
        "Twitterbot/1.0",
        "WhatsApp/2.23.20.0 A",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Applebot/0.1",
        "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    ],
)
def test_known_link_previewers_are_recognised(user_agent):
    assert is_link_previewer(user_agent)


@pytest.mark.parametrize(
    "user_agent",
    [
        None,
        "",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
        " Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
        " Chrome/124.0 Mobile Safari/537.36",
    ],
)
def test_people_s_browsers_are_not_previewers(user_agent):
    assert not is_link_previewer(user_agent)
