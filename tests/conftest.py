"""Test set-up: fixtures live in plugin modules under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.database",
    "tests.fixtures.emulator",
]
