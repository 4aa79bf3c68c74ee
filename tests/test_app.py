"""create_app: how the app it builds renders pages."""

import inspect


async def test_template_context_processors_run_in_the_event_loop(app, client, make_user, sign_in):
    # Quart runs a synchronous context processor in a thread, a hop per processor per render.
    processors = [p for group in app.template_context_processors.values() for p in group]
    assert processors and all(inspect.iscoroutinefunction(p) for p in processors)
    # Templates get the signed-in customer from our processor.
    user = await make_user(name="Ama Mensah")
    sign_in(client, user)
    page = await client.get("/account")
    assert "Ama Mensah" in await page.get_data(as_text=True)
