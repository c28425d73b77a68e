"""The relay host's dashboard (DESIGN §3.6): an aiohttp application on a Unix socket of the data
dir, reached only through the front, which authenticates the visitor and passes who they are."""

from .app import DashboardContext, dashboard_app

__all__ = ["DashboardContext", "dashboard_app"]
