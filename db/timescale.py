# placeholder until the Timescale helper lands its module
from typing import Any


def timescale_status(conn: Any) -> dict[str, Any]:
    return {"enabled": False, "detail": "", "hypertables": []}
