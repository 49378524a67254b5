"""What the policies allow, why, and what a change would change: ``npc matrix``, ``explain``, ``diff``.

Everything here reads the IR and the inventory the way ``npc compile`` does (same sources, same
network selection, no optimiser passes, so every rule still has its place in a file) and decides
connections by the semantics of ``ir`` - the ones ``evaluate.Evaluator`` states pair by pair - but
per equivalence class of pods and of ports, so a 5,000-pod cluster costs a few class matrices.
"""
