"""Starting and holding engine servers: the hardware that exists and its leases, launch planning, the launchers, the
server lifecycle, the session's pool of servers, and the handle suites receive."""
