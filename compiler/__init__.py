"""npc: a declarative network-policy compiler (Kubernetes NetworkPolicy -> iptables/ipset, nftables)."""

__version__ = "0.1.0"
