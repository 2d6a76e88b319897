"""The master key of this test run (one module, imported once: pytest loads conftest.py under two
names, so a key generated there would differ between fixtures and test modules)."""

from storage.keys import MasterKey

# The database outlives each test's server: every server of the run uses this one key.
MASTER_KEY = MasterKey.generate()
