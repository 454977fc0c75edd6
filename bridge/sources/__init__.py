"""One parser a payload kind; each turns a request body into a Notification."""
