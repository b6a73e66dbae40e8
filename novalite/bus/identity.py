"""Who sent a message: the identity the transport vouches for, and what it may say.

A compute host is the part of the cloud most exposed to its guests, so a host that is
broken into must not be able to speak for other hosts: fail their builds, mark their
servers deleted, read their instances, or send commands to their agents. Each agent
therefore connects to the broker as a user of its own, named ``novalite-agent-<host>``;
RabbitMQ checks the ``user_id`` property of every message against the connection's
login (it refuses a forged one), so a receiver knows which host's agent sent it. The
receiving side then applies two rules (``require_*`` below, called by the services):

* a message from an agent identity may only be about that agent's host — the conductor
  checks the ``host`` it names and the host of the instance it touches;
* commands (to an agent, the scheduler, or the conductor's build entry point) come from
  controllers only: an agent identity is refused.

Any other identity (the controllers' user) is a controller. In one process
(``memory://``) every sender is None: one process, one trust domain. The broker's
permissions for an agent user keep it to its own queue (see docs/security-model.md).
"""

from __future__ import annotations

from novalite.bus.errors import NotAuthorized
from novalite.context import RequestContext

#: Broker users with this prefix are compute agents; the rest of the name is the host.
AGENT_USER_PREFIX = "novalite-agent-"
#: The sender of a broker message without ``user_id``: nobody vouches for it, so it is
#: neither a controller nor any host's agent. (Why controllers are upgraded first: a
#: 1.x controller does not stamp ``user_id``, and new agents refuse its commands.)
ANONYMOUS = "(no user_id)"


def agent_user(host: str) -> str:
    """The broker user a host's agent connects as."""
    return f"{AGENT_USER_PREFIX}{host}"


def agent_host(sender: str | None) -> str | None:
    """The host an agent identity speaks for; None for a controller (or in-process)."""
    if sender is not None and sender.startswith(AGENT_USER_PREFIX):
        return sender[len(AGENT_USER_PREFIX) :]
    return None


def is_controller(sender: str | None) -> bool:
    """Whether a sender may send commands (``Bus.serve(..., accept=is_controller)``)."""
    return sender != ANONYMOUS and agent_host(sender) is None


def require_host(ctx: RequestContext, host: str | None, what: str) -> None:
    """Refuse a message from an agent about another host than its own (``host`` None:
    about nothing on any host, which an agent may not do either)."""
    if ctx.sender == ANONYMOUS:
        raise NotAuthorized(f"a message without a sender the transport vouches for may not {what}")
    own = agent_host(ctx.sender)
    if own is not None and own != host:
        raise NotAuthorized(f"{ctx.sender} speaks for host {own} only, not for {host or 'no host'} ({what})")


def require_controller(ctx: RequestContext, what: str) -> None:
    """Refuse a command from an agent identity (or from nobody the transport vouches for)."""
    if not is_controller(ctx.sender):
        raise NotAuthorized(f"{ctx.sender} is a compute agent and may not {what}")
