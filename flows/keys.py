"""`rotate_keys`: re-encrypt every stored secret under the newest Fernet key (manual deployment)."""

from __future__ import annotations

from prefect import flow

from flows.common import markdown
from tasks.steps import rotate_keys_task


@flow(name="rotate_keys")
def rotate_keys(block: str = "default", batch_size: int = 500) -> dict[str, int]:
    """Run after `strategy-engine keys generate`; then `keys rotate --drop-old` may drop the older keys."""
    report = rotate_keys_task(block=block, batch_size=batch_size)
    markdown(
        "key-rotation",
        "all",
        f"## Key rotation\n\n- rotated: {report['rotated']}\n- already current: {report['already_current']}\n"
        f"- remaining under older keys: {report['remaining']}\n",
        "Key rotation counts (never any secret).",
    )
    return report
