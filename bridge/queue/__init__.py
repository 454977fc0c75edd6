"""How work reaches the workers. The broker only distributes; the store decides."""
