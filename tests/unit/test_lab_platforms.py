"""The lab's reference-platform gate (lab/platforms.py): what each PE generation's oldest
master platform's curl and openssl would refuse, and that the product's own commands pass
it on every profile (pure: the gate's tables against the product's command builders)."""

from __future__ import annotations

import pytest

from lab.generations import PROFILES, parse_version
from lab.platforms import EL5, EL6, EL7, EL8, SLES11, curl_refusal, openssl_refusal, platform_for
from provider.master.certs import served_certificate_command
from provider.pe import ca
from provider.pe.curl import curl_argv


def test_each_profile_has_the_oldest_master_platform_of_its_line() -> None:
    assert platform_for(parse_version("3.7")) is EL5
    assert platform_for(parse_version("2016.4.9")) is SLES11
    assert platform_for(parse_version("2018.1")) is EL6
    assert platform_for(parse_version("2019.8")) is EL7
    assert platform_for(parse_version("2021.7")) is EL7
    assert platform_for(parse_version("2023.8")) is EL7
    assert platform_for(parse_version("2025.12")) is EL8


def test_timeout_1_arrived_with_coreutils_7() -> None:
    assert not EL5.has_timeout and not SLES11.has_timeout  # 5.97, 6.12: the Perl deadline there
    assert EL6.has_timeout and EL7.has_timeout and EL8.has_timeout


def test_curl_refuses_what_the_platform_lacks_in_curls_own_words() -> None:
    refusal = curl_refusal(["-sS", "--fail-with-body", "--max-time", "60", "https://x"], EL7)
    assert refusal and refusal.startswith("curl: option --fail-with-body: is unknown") and "7.76.0" in refusal
    assert curl_refusal(["-sS", "--fail-with-body", "https://x"], EL8)  # 7.61.1 < 7.76.0
    assert curl_refusal(["--json", "{}", "https://x"], EL8)
    assert curl_refusal(["-w", "%{exitcode}", "https://x"], EL7)  # printed unexpanded there
    assert curl_refusal(["--noproxy", "*", "https://x"], EL6) is None  # 7.19.4 <= 7.19.7
    assert curl_refusal(["-sSfo", "/tmp/f", "https://x"], EL6) is None  # bundled, value inline
    assert curl_refusal(["-sSf", "-o", "/tmp/f", "https://x"], EL6) is None
    assert curl_refusal(["--retry-all-errors", "https://x"], EL8)  # not in the table: refused too


def test_openssl_refuses_what_the_platform_lacks() -> None:
    argv = ["s_client", "-connect", "h:8140", "-servername", "h", "-CAfile", "ca", "-verify_hostname", "h"]
    refusal = openssl_refusal(argv, EL6)
    assert refusal and refusal.startswith("unknown option -verify_hostname") and "1.0.2" in refusal
    assert openssl_refusal(argv, EL7)  # RHEL 7.0's 1.0.1e
    assert openssl_refusal(argv, EL8) is None
    servername = openssl_refusal(["s_client", "-connect", "h:1", "-servername", "h"], EL5)
    assert servername and "0.9.8f" in servername and "0.9.8e" in servername
    assert openssl_refusal(["pkey", "-in", "k", "-pubout"], SLES11)  # pkey: 1.0.0
    assert openssl_refusal(["rsa", "-in", "k", "-pubout"], EL5) is None
    assert openssl_refusal(["x509", "-in", "c.pem", "-noout", "-ext", "subjectAltName"], EL8) is None
    assert openssl_refusal(["x509", "-in", "c.pem", "-noout", "-ext", "subjectAltName"], EL7)
    assert curl_refusal(["--data-urlencode", "a=b", "https://x"], EL5)  # 7.18.0 > 7.15.5


@pytest.mark.parametrize("version", PROFILES)
def test_the_products_curl_and_openssl_commands_pass_every_profiles_platform(version: str) -> None:
    platform = platform_for(parse_version(version))
    client = ca.ApiClient("p.example.com", "/c.pem", "/k.pem", "/ca.pem")
    commands = [
        ca.api_status_command(client, "c1"),
        ca.api_sign_command(client, "c1")[0],
        *(argv for argv, _ in ca.api_clean_commands(client, "c1", signed=True)),
        curl_argv(
            "--cacert", "/ca.pem", "-H", "Content-Type: application/json", "-X", "POST", "--data-binary", "@-", "u"
        ),
        ["curl", "-sSf", "--max-time", "120", "--cacert", "/ca.pem", "-o", "/tmp/i.bash", "https://p:8140/x"],
        ["curl", "-sS", "--max-time", "10", "--cacert", "/ca.pem", "https://c1:8140/status/v1/simple"],
    ]
    for argv in commands:
        assert argv[0] == "curl" and curl_refusal(argv[1:], platform) is None, argv
    assert openssl_refusal(served_certificate_command("c1", "/ca.pem")[1:], platform) is None
    csr = ["req", "-in", "/csr.pem", "-outform", "DER"]
    assert openssl_refusal(csr, platform) is None and openssl_refusal(["dgst", "-sha256"], platform) is None
    script = ca.download_cert_script("https://p:8140/puppet-ca/v1/certificate/c1", "c1", "/ca.pem", "/h.pem", "/k.pem")
    passed: list[bool] = []
    for part in script.split(";"):
        for alternative in part.split("||"):  # pkey || rsa: one of them must pass
            words = alternative.replace("$(", " ").replace(")", " ").split()
            for tool, check in (("curl", curl_refusal), ("openssl", openssl_refusal)):
                if tool in words:
                    rest = [w.strip("'\"") for w in words[words.index(tool) + 1 :] if w != "2>/dev/null"]
                    passed.append(check(rest, platform) is None)
        if passed:
            assert any(passed), part
        passed.clear()
