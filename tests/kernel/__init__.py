"""Kernel-in-the-loop test harness: truth-table cases run on real network namespaces.

``case`` (no root) loads cases and writes the inputs a user hands to npc; ``cluster`` builds the
namespaces, runs ``npc apply`` in the node and probes every pair; ``report`` renders differences;
``expected`` is the reference evaluator's table for a case (no root); ``netns`` is a bare namespace
for tests that inspect what ``npc apply`` loaded; ``churn`` holds the churn and re-apply scenarios
several suites run; ``command`` runs ``npc`` as a user does. Test modules import from here, never
from each other.
"""
