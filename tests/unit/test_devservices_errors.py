"""bos_project.devservices' errors, without starting anything: they name the variable, never its secret."""

from __future__ import annotations

import pytest

from bos_project import devservices


def test_unreachable_external_url_names_the_variable_not_the_password() -> None:
    with pytest.raises(devservices.DevServicesError) as error:
        devservices._wait_external("DATABASE_URL", "postgres://u:s3cret@127.0.0.1:1/x", timeout=0.3)
    assert "DATABASE_URL" in str(error.value)
    assert "127.0.0.1:1" in str(error.value)
    assert "s3cret" not in str(error.value)
