"""The editorial desk: roles, the actor of each change, the audit log and the two-person rule."""
