"""Text that arrives by upload or paste: bounded in size, and refused
clearly when it is not text."""

from __future__ import annotations

from fastapi import HTTPException, UploadFile

SITREP_MAX_BYTES = 256 * 1024
CSV_MAX_BYTES = 10 * 1024 * 1024


def read_text(upload: UploadFile | None, pasted: str | None, *, limit: int, what: str) -> str:
    """The uploaded file if one was chosen, else the pasted text. (The upload
    is already spooled by the server; reading it here blocks only this thread.)"""
    if upload is not None and upload.filename:
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"The {what} file is larger than {limit // 1024} KB.")
        if b"\x00" in data:
            raise HTTPException(400, f"{upload.filename} is not a text file.")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise HTTPException(400, f"{upload.filename} is not UTF-8 text. Save it as UTF-8 and try again.") from None
    text = pasted or ""
    if len(text.encode("utf-8")) > limit:
        raise HTTPException(413, f"The pasted {what} is larger than {limit // 1024} KB.")
    if not text.strip():
        raise HTTPException(400, f"Paste the {what} or choose a file.")
    return text
