from crm_bridge.masking import luhn_ok, mask_iban, mask_pan, mask_pin, redact_text


def test_pan_keeps_last_four() -> None:
    assert mask_pan("4111 1111 1111 1111") == "************1111"
    assert mask_pan("5500-0000-0000-0004") == "************0004"
    assert mask_pan("123") == "***"


def test_pin_fully_masked_without_length() -> None:
    assert mask_pin("12345678") == mask_pin("12") == "****"
    assert "1" not in mask_pin("1111")


def test_iban_middle_masked() -> None:
    assert mask_iban("IT60 X054 2811 1010 0000 0123 456") == "IT60" + "*" * 19 + "3456"
    assert mask_iban("short") == "*****"


def test_redact_free_text() -> None:
    text = "card 4111111111111111 iban IT60X0542811101000000123456 ref 9876543210988"
    out = redact_text(text)
    assert "4111111111111111" not in out and "************1111" in out
    assert "IT60" in out and "0542811101" not in out and out.count("3456") == 1
    assert "9876543210988" in out  # not Luhn-valid: an ordinary reference stays readable
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
