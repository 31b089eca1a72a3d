"""Every contact trainer_ext has with the Trainer's internals, in one module.

(Being written: the lead's redesign moves each contact here from callback.py.)
"""

from __future__ import annotations

# ---- model card and trackers (H6) ----
