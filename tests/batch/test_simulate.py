"""The traffic driver's users act like the world's: each plays on the device the world gave it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batch.simulate import World
from gpu_core.schema import DEVICE_TYPES


def test_simulated_users_use_their_devices_of_the_world(tiny_world):
    world = World(tiny_world.lake, 200, np.random.default_rng(0))
    users = pd.read_parquet(tiny_world.lake / "users").set_index("user_id")["device_type"]
    expected = [DEVICE_TYPES.index(users[int(u) + 1]) for u in world.users]  # hidden-model index u = id - 1
    assert len(world.users) == 200 and world.devices.tolist() == expected
    share = np.bincount(world.devices, minlength=len(DEVICE_TYPES)) / len(world.devices)
    assert share.max() > 0.45  # the world's mix (60 / 30 / 10 %), not uniform thirds
