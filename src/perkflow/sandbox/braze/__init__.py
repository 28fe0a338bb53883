"""A stateful, behaviour-faithful fake of Braze's REST API (users/track, export/ids) for loopback tests."""

from perkflow.sandbox.braze.app import create_app
from perkflow.sandbox.braze.config import BrazeSandboxConfig
from perkflow.sandbox.braze.sandbox import BrazeSandbox

__all__ = ["BrazeSandbox", "BrazeSandboxConfig", "create_app"]
