"""Phase handlers: the code pipeline phases name. Each module registers its handlers."""
