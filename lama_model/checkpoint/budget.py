"""What reading one checkpoint may still cost: objects (with the work of hashing keys), bytes of memory,
pickle opcodes and wall-clock time. The unpickler and the tensor walk charge one Budget as they go, *before*
or right after each allocation, so no single step can take more than the budget has left."""

from __future__ import annotations

import time

from .records import DEFAULT_LIMITS, Limits, RefusedCall


class BudgetExceeded(RefusedCall):
    """A budget of Limits ran out; the message names which, in words a user can act on."""


class Budget:
    """Counts down the Limits of one read (the pickle and the walk over its objects share it)."""

    __slots__ = ("limits", "objects", "memory", "opcodes", "deadline")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.objects = limits.max_objects
        self.memory = limits.max_memory
        self.opcodes = limits.max_opcodes
        self.deadline = time.monotonic() + limits.max_seconds

    def spend(self, objects: int = 0, memory: int = 0) -> None:
        """Charge `objects` (objects created, elements stored or copied, key hashing steps) and `memory` bytes."""
        self.objects -= objects
        self.memory -= memory
        if self.objects < 0:
            raise BudgetExceeded(f"more than {self.limits.max_objects} objects (objects, container elements "
                                 "and key hashing work)")
        if self.memory < 0:
            raise BudgetExceeded(f"more than {self.limits.max_memory >> 20} MiB of memory for its objects")

    def run(self, opcodes: int) -> None:
        """Charge `opcodes` executed (each may hold a stack slot) and check the clock."""
        self.opcodes -= opcodes
        if self.opcodes < 0:
            raise BudgetExceeded(f"more than {self.limits.max_opcodes} pickle opcodes")
        self.spend(memory=8 * opcodes)
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"more than {self.limits.max_seconds:g} s of reading")
