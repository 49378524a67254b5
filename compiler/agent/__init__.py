"""``npc agent``: keep the kernel in step with policies and the live inventory."""
