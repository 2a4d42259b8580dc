"""`pypireg trusted-publisher add|list|remove`: the CI jobs that may publish without a secret.

Composition layer; the checks are pypireg/oidc/publishers.py's, shared with
the HTTP API. The issuer must be one of the config's
`[[trusted_publishing.issuers]]`, and the publisher's options must fit its
kind: `--github` with `--workflow`, `--gitlab` with `--ci-config-path`, or
`--claim NAME=VALUE` for a generic issuer.
"""

from __future__ import annotations

import argparse

from pypireg.admin.context import CommandContext, CommandError, Subparsers, add_command, add_group
from pypireg.admin.output import render, table
from pypireg.oidc.publishers import publisher_document, register_publisher
from pypireg.storage import trusted_publishing as store

_HEADERS = ["ID", "KIND", "ISSUER", "MATCHES"]


def add_parsers(sub: Subparsers) -> None:
    group = add_group(sub, "trusted-publisher",
                      "CI jobs that publish with their OIDC identity (trusted publishing)")
    add = add_command(group, "add", _add, help="let a CI job publish to a project")
    add.add_argument("--project", required=True, help="project path or id")
    add.add_argument("--issuer", required=True,
                     help="a configured [[trusted_publishing.issuers]] url")
    which = add.add_mutually_exclusive_group(required=True)
    which.add_argument("--github", metavar="OWNER/REPO", help="a GitHub repository")
    which.add_argument("--gitlab", metavar="NAMESPACE/PROJECT", help="a GitLab project")
    which.add_argument("--claim", action="append", metavar="NAME=VALUE",
                       help="generic issuer: a claim that must match (repeatable)")
    add.add_argument("--workflow", metavar="FILE",
                     help="GitHub: the workflow's file name in .github/workflows/")
    add.add_argument("--ci-config-path", metavar="PATH",
                     help="GitLab: the CI configuration file (default .gitlab-ci.yml)")
    add.add_argument("--environment", help="only jobs in this deployment environment")
    add.add_argument("--owner-id", metavar="ID",
                     help="GitHub: the owner's numeric id (default: pinned at first use)")
    listing = add_command(group, "list", _list, help="list a project's trusted publishers")
    listing.add_argument("--project", required=True, help="project path or id")
    remove = add_command(group, "remove", _remove, help="remove a trusted publisher by id")
    remove.add_argument("publisher_id", type=int)


def _claims(values: list[str] | None) -> dict[str, str] | None:
    if values is None:
        return None
    claims: dict[str, str] = {}
    for value in values:
        name, equals, expected = value.partition("=")
        if not equals or not name:
            raise CommandError(f"--claim {value!r}: give NAME=VALUE, e.g. --claim sub=repo:x")
        claims[name] = expected
    return claims


async def _add(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    if args.github is None and args.workflow is not None:
        raise CommandError("--workflow goes with --github")
    if args.gitlab is None and args.ci_config_path is not None:
        raise CommandError("--ci-config-path goes with --gitlab")
    try:
        publisher = await register_publisher(
            ctx.db, ctx.config.trusted_publishing, project.id, args.issuer,
            "github" if args.github else "gitlab" if args.gitlab else "generic",
            repository=args.github or args.gitlab,
            workflow=args.workflow or args.ci_config_path, environment=args.environment,
            owner_id=args.owner_id, claims=_claims(args.claim), actor=ctx.actor)
    except ValueError as e:
        raise CommandError(str(e)) from None
    return render(ctx.as_json, publisher_document(publisher),
                  f"Added trusted publisher {publisher.id} to project {project.path}: "
                  f"{publisher.kind} {publisher.describe()} ({publisher.issuer}).")


async def _list(ctx: CommandContext, args: argparse.Namespace) -> str:
    project = await ctx.project(args.project)
    publishers = await store.list_publishers(ctx.db, project.id)
    return render(ctx.as_json, [publisher_document(p) for p in publishers],
                  table([[p.id, p.kind, p.issuer, p.describe()] for p in publishers],
                        _HEADERS))


async def _remove(ctx: CommandContext, args: argparse.Namespace) -> str:
    if not await store.remove_publisher(ctx.db, args.publisher_id, actor=ctx.actor):
        raise CommandError(f"no trusted publisher with id {args.publisher_id}; see "
                           "`pypireg trusted-publisher list --project P`")
    return (f"Removed trusted publisher {args.publisher_id}; tokens it minted expire within "
            "15 minutes.")
