"""Importing a CSV into a list from the admin UI: upload, map columns to fields by name, preview, import.

Three steps on one page. The upload's header row is matched to the list's fields by the names people
see (:mod:`contactsync.automation.import_columns`), and the person corrects the guess; the preview shows the
first rows as they will be stored and every row's problems (row, column, what is wrong). The import
runs all or nothing: one refused row and nothing is written, the problems listed again.

Between the steps the file travels in the preview form's hidden fields (base64, in chunks under the
form parser's per-field limit) rather than on the server: any app process can take the next step, and
nothing is kept for an abandoned import. Nothing from the form is trusted: the final submit checks
the size again, parses the file again and checks every row against the list's fields as they are
then; the writes go through the API's import path (:func:`contactsync.automation.imports.store`), so
automations fire as for an API import, with one audit row.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import sqlalchemy as sa
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from contactsync.api.deps import own_list
from contactsync.automation import import_columns as columns
from contactsync.automation import imports
from contactsync.automation.lists import FieldOut, get_list, list_fields
from contactsync.errors import ContactSyncError, NotFoundError, ValidationError
from contactsync.web.app import Web
from contactsync.web.automation_pages import runtime_of, wake
from contactsync.web.platform_pages import EDITOR, form_text, utcnow
from contactsync.web.security import Session

UPLOAD_MAX_BYTES = 2 * 1024 * 1024
MAX_COLUMNS = 200
PREVIEW_ROWS = 10
PROBLEMS_SHOWN = 100
CHUNK_CHARS = 256 * 1024
"""Base64 characters per hidden field: well under Starlette's 1 MB limit on a form field."""


class TooLarge(ValidationError):
    """An upload over :data:`UPLOAD_MAX_BYTES` (answered with 413)."""


def size_text(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 100 * 1024 else f"{max(n // 1024, 1)} KB"


def too_large(n: int | None = None) -> TooLarge:
    got = f"the file is {size_text(n)}; " if n is not None else "the file is too large; "
    return TooLarge(
        f"{got}an import takes at most {size_text(UPLOAD_MAX_BYTES)}: split it into smaller files",
        field="file",
    )


def chunks(data: bytes) -> list[str]:
    """The file as the hidden fields that carry it to the next step."""
    text = base64.b64encode(data).decode("ascii")
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


def carried(form: Any) -> bytes:
    """The file the hidden fields carry back, checked like an upload."""
    text = "".join(v for v in form.getlist("csv") if isinstance(v, str))
    if len(text) > (UPLOAD_MAX_BYTES + 2) // 3 * 4:
        raise too_large()
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("the file was lost on the way: upload it again", field="file") from None
    if not data:
        raise ValidationError("choose a CSV file to upload", field="file")
    return data


async def uploaded(form: Any) -> tuple[bytes, str]:
    """The uploaded file's bytes (at most the limit) and name, or the file carried by the form."""
    upload = form.get("file")
    if isinstance(upload, UploadFile) and (upload.filename or upload.size):
        data = await upload.read(UPLOAD_MAX_BYTES + 1)
        if len(data) > UPLOAD_MAX_BYTES:
            raise too_large(upload.size if upload.size else None)
        if not data:
            raise ValidationError("the file is empty: its first row must name the columns", field="file")
        return data, (upload.filename or "")[:200]
    if "csv" not in form:
        raise ValidationError("choose a CSV file to upload", field="file")
    return carried(form), form_text(form, "filename")[:200]


def read(data: bytes) -> columns.Table:
    table = columns.read_csv(data)
    if len(table.headers) > MAX_COLUMNS:
        raise ValidationError(f"at most {MAX_COLUMNS} columns per import", field="file")
    if not table.rows:
        raise ValidationError("the file has no contacts below its header row", field="file")
    return table


def targets_of(form: Any, table: columns.Table, defs: list[FieldOut]) -> list[str]:
    """The mapping the form chose (one ``map:<column>`` per column), else the guess from the header."""
    chosen = [form.get(f"map:{i}") for i in range(len(table.headers))]
    if all(isinstance(c, str) for c in chosen):
        return [str(c) for c in chosen]
    return columns.guess(table.headers, defs)


def options_of(defs: list[FieldOut]) -> list[tuple[str, str]]:
    """The mapping choices a column offers: ignore, the built-ins, then the fields by name."""
    out = [(columns.IGNORE, "— ignore this column —")]
    out += list(columns.BUILTINS.items())
    out += [(f"field:{f.id}", f"{f.name} ({f.shortcode_key}, {f.type})") for f in defs]
    return out


def routes(web: Web) -> list[BaseRoute]:
    def load(conn: sa.Connection, session: Session, list_id: int) -> tuple[Any, list[FieldOut]]:
        own_list(conn, session.who.principal, list_id)
        return get_list(conn, list_id), list_fields(conn, list_id)

    async def upload_page(
        request: Request, session: Session, *, status: int = 200, error: str = ""
    ) -> Response:
        list_id = int(request.path_params["list_id"])
        found, defs = await web.read(lambda conn: load(conn, session, list_id))
        return web.render(
            request, session, "platform/import.html", status, step="upload", lst=found, defs=defs,
            problem=error, limit=size_text(UPLOAD_MAX_BYTES), max_bytes=UPLOAD_MAX_BYTES,
            builtins=columns.BUILTINS,
        )  # fmt: skip

    async def show(request: Request, session: Session) -> Response:
        return await upload_page(request, session)

    async def preview_page(
        request: Request, session: Session, form: Any, data: bytes, filename: str, *, status: int = 200,
        failed: bool = False,
    ) -> Response:  # fmt: skip
        """The mapping, the first rows as they will be stored and every problem; 422 on any problem."""
        list_id = int(request.path_params["list_id"])
        found, defs = await web.read(lambda conn: load(conn, session, list_id))
        try:
            table = read(data)
        except ValidationError as exc:
            return await upload_page(request, session, status=422, error=str(exc))
        targets = targets_of(form, table, defs)
        mapping = columns.mapping_problems(table.headers, targets, defs)
        checked = None
        if not mapping:
            checked = columns.check(table, targets, defs, shown=PREVIEW_ROWS)
        problems = checked.problems if checked else []
        valid = not mapping and not problems
        first = table.rows[0][1]
        samples = [first[i] if i < len(first) else "" for i in range(len(table.headers))]
        return web.render(
            request, session, "platform/import.html", status if valid else 422,
            step="preview", lst=found, defs=defs, filename=filename, chunks=chunks(data),
            headers=table.headers, samples=samples,
            targets=targets, options=options_of(defs), mapping_problems=mapping,
            mapped=[(t, columns.label(t, defs)) for t in targets if t != columns.IGNORE],
            preview=checked.shown if checked else [], problems=problems[:PROBLEMS_SHOWN],
            more_problems=max(len(problems) - PROBLEMS_SHOWN, 0),
            bad_rows=len({p.row for p in problems}), rows=len(table.rows), valid=valid, failed=failed,
        )  # fmt: skip

    async def preview(request: Request, session: Session) -> Response:
        form = await request.form()
        list_id = int(request.path_params["list_id"])
        await web.read(lambda conn: own_list(conn, session.who.principal, list_id))
        try:
            data, filename = await uploaded(form)
        except TooLarge as exc:
            return await upload_page(request, session, status=413, error=str(exc))
        except ValidationError as exc:
            return await upload_page(request, session, status=422, error=str(exc))
        return await preview_page(request, session, form, data, filename)

    async def run(request: Request, session: Session) -> Response:
        form = await request.form()
        list_id = int(request.path_params["list_id"])
        who = session.who
        await web.read(lambda conn: own_list(conn, who.principal, list_id))
        try:
            data = carried(form)
            table = read(data)
        except TooLarge as exc:
            return await upload_page(request, session, status=413, error=str(exc))
        except ValidationError as exc:
            return await upload_page(request, session, status=422, error=str(exc))
        filename = form_text(form, "filename")[:200]
        rt = runtime_of(web)

        def work(conn: sa.Connection) -> imports.ImportResult | None:
            own_list(conn, who.principal, list_id)
            defs = list_fields(conn, list_id)  # as they are now, not as the preview saw them
            targets = targets_of(form, table, defs)
            if columns.mapping_problems(table.headers, targets, defs):
                return None
            checked = columns.check(table, targets, defs, shown=0)
            if checked.problems or not checked.rows:
                return None
            result = imports.store(conn, rt, list_id, checked.rows)
            who.record(conn, "contact.import", "list", list_id, now=utcnow(), file=filename,
                       **result.model_dump())  # fmt: skip
            return result

        try:
            result = await web.write(work)
        except NotFoundError as exc:
            if exc.field == "list_id":
                raise
            result, error = None, str(exc)
        except ContactSyncError as exc:  # changed under us between the check and the write
            result, error = None, str(exc)
        else:
            error = ""
        if result is None:
            if error:
                return await upload_page(request, session, status=422, error=f"nothing was imported: {error}")
            return await preview_page(request, session, form, data, filename, failed=True)
        if result.deliveries:
            wake(web)
        note = (
            f"imported {result.rows} rows: {result.created} contacts created, {result.updated} updated, "
            f"{result.unchanged} unchanged; {result.deliveries} deliveries queued"
        )
        return web.redirect(request, f"/contacts?list={list_id}", msg=note)

    return [
        web.page("/lists/{list_id:int}/import", show, role=EDITOR),
        web.page("/lists/{list_id:int}/import/preview", preview, methods=["POST"], role=EDITOR),
        web.page("/lists/{list_id:int}/import", run, methods=["POST"], role=EDITOR),
    ]
