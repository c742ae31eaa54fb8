"""etcdsop: run the whole life of an etcd cluster over SSH from a Pigsty inventory."""

__version__ = "0.1.0"
