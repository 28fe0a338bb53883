"""A local, behaviour-faithful fake of Bloomreach Engagement's Tracking API for tests, demo and benchmarks."""

from perkflow.sandbox.bloomreach.app import create_app
from perkflow.sandbox.bloomreach.config import BloomreachSandboxConfig, Permissions
from perkflow.sandbox.bloomreach.sandbox import BloomreachSandbox

__all__ = ["BloomreachSandbox", "BloomreachSandboxConfig", "Permissions", "create_app"]
