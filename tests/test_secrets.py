from benchflow.secrets import REDACTED, is_secret_key, mask, redact_tree, secret_values


def test_secret_key_names():
    for k in (
        "password",
        "db_password",
        "apiKey",
        "api_key",
        "secret_access_key",
        "hf_token",
        "client_secret",
        "credentials",
        "service.auth_token",
    ):
        assert is_secret_key(k), k
    for k in ("max_tokens", "tokens_per_s", "key_range", "keys", "monkey", "endpoint", "batch"):
        assert not is_secret_key(k), k


def test_redact_and_mask():
    tree = {"service": {"password": "hunter22", "host": "db", "auth": {"token": "tok-123456"}}}
    red = redact_tree(tree)
    assert red["service"]["password"] == REDACTED and red["service"]["host"] == "db"
    assert red["service"]["auth"]["token"] == REDACTED
    found = secret_values(tree, environ={"PGPASSWORD": "longpassword1", "HOME": "/root"})
    assert found == {"hunter22", "tok-123456", "longpassword1"}
    text = "connect host=db password=hunter22 url=postgresql://u:pw9@h/db t=tok-123456"
    out = mask(text, found)
    assert "hunter22" not in out and "pw9" not in out and "tok-123456" not in out
    assert "host=db" in out


def test_masks_passwords_in_hydra_escaped_urls_and_override_lines():
    """Hydra escapes ':' in the overrides it logs and saves in multirun.yaml."""
    from benchflow.secrets import mask_overrides_line

    line = r"service=s3 +service.password=abc123 tracking.uri=http\://bob\:pw-Zz9@h\:5000"
    out = mask_overrides_line(line)
    assert "abc123" not in out and "pw-Zz9" not in out
    assert r"http\://bob\:***REDACTED***@h\:5000" in out and out.startswith("service=s3 ")
