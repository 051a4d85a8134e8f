"""`mxgate console`: the operators' web console (Starlette + Jinja2, a few lines of plain
JavaScript), over one runtime's Desk. Served on loopback, behind a random token."""
