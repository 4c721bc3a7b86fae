"""A real MCP client for valetkey's MCP server: the official Python SDK.

Connects over TRANSPORT (`stdio`: starts `VALETKEY mcp` with VALETKEY_URL
and VALETKEY_CREDENTIAL in its environment, as an agent's client would;
`http`: the broker's /mcp with the credential as `Authorization: Bearer`),
lists the tools and resources, reads the agents' instructions, then calls
each tool of CALLS (a JSON list of {"tool", "arguments"}) in order. An
argument written "$N.a.b" is field a.b of call N's answer. Prints one JSON
document: the tools, the resources, the instructions' text and each call's
answer. Any failure exits non-zero.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TRANSPORT = os.environ["TRANSPORT"]
URL = os.environ["VALETKEY_URL"]
CREDENTIAL = os.environ["VALETKEY_CREDENTIAL"]
CALLS = json.loads(os.environ["CALLS"])


def resolve(value, answers):
    """`$N.a.b` → answers[N]["a"]["b"]; everything else as it is."""
    if isinstance(value, str) and value.startswith("$"):
        index, *path = value[1:].split(".")
        found = answers[int(index)]["answer"]
        for key in path:
            found = found[key]
        return found
    if isinstance(value, dict):
        return {k: resolve(v, answers) for k, v in value.items()}
    return value


async def session_run(session):
    await session.initialize()
    tools = (await session.list_tools()).tools
    resources = (await session.list_resources()).resources
    instructions = await session.read_resource(resources[0].uri)
    answers = []
    for call in CALLS:
        arguments = resolve(call.get("arguments", {}), answers)
        result = await session.call_tool(call["tool"], arguments)
        text = result.content[0].text if result.content else None
        answers.append(
            {
                "tool": call["tool"],
                "is_error": bool(result.is_error),
                "answer": result.structured_content,
                # The text a client without structured content shows.
                "text": json.loads(text) if text else None,
            }
        )
    return {
        "tools": [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in tools
        ],
        "resources": [{"uri": str(r.uri), "name": r.name} for r in resources],
        "instructions": instructions.contents[0].text,
        "calls": answers,
    }


async def main():
    if TRANSPORT == "stdio":
        server = StdioServerParameters(
            command=os.environ["VALETKEY"],
            args=["mcp"],
            env={"VALETKEY_URL": URL, "VALETKEY_CREDENTIAL": CREDENTIAL},
        )
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                return await session_run(session)
    headers = {"Authorization": f"Bearer {CREDENTIAL}"}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"{URL}/mcp", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                return await session_run(session)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
    sys.stdout.flush()
