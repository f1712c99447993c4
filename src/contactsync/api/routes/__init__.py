"""One router per resource; each route is a thin translation onto a service function."""
