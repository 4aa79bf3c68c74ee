"""Cart service: the one add (batch writer or write transaction), quantities within stock, lines
in one query, totals with coupons, guest merge."""

import asyncio

import pytest
from sqlalchemy import event, func, select

from storefront.db.engine import make_engine, make_sessionmaker, sessionmaker_for
from storefront.db.sqlite_batches import sqlite_batch_writer
from storefront.db.transactions import write_transaction
from storefront.models import Cart, CartItem
from storefront.services.cart import (
    CartError,
    CartProduct,
    count_cart_items,
    insert_cart,
    parse_product_id,
    parse_quantity,
    price_cart,
    select_cart_by_token,
    select_cart_for_user,
    select_cart_lines,
    select_current_cart,
)
from storefront.services.cart_add import add_to_cart
from storefront.services.cart_changes import (
    clear_cart,
    merge_guest_cart,
    set_cart_coupon,
    set_cart_quantity,
)
from tests.fixtures_shop import counted_statements


async def cart_contents(app, cart_id: int) -> dict[int, int]:
    async with sessionmaker_for(app)() as db_session:
        rows = await db_session.execute(
            select(CartItem.product_id, CartItem.quantity).where(CartItem.cart_id == cart_id)
        )
        return {product_id: quantity for product_id, quantity in rows}


async def new_cart(app, user_id: int | None = None) -> Cart:
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        cart = await insert_cart(db_session, user_id)
    return cart


async def put(app, cart: Cart, product_id: int, quantity: int) -> None:
    async with sessionmaker_for(app)() as db_session:
        await add_to_cart(db_session, cart.user_id, cart.token, product_id, quantity)


@pytest.mark.parametrize(
    ("raw", "allow_zero", "expected"),
    [("3", False, 3), (" 2 ", False, 2), ("0", True, 0), ("007", False, 7), (4, False, 4)],
)
def test_parse_quantity_accepts_whole_numbers(raw, allow_zero, expected):
    assert parse_quantity(raw, allow_zero=allow_zero) == expected


@pytest.mark.parametrize(
    ("raw", "allow_zero", "message"),
    [
        ("abc", False, "whole number"),
        ("1.5", False, "whole number"),
        ("1e3", False, "whole number"),
        ("-1", False, "cannot be negative"),
        ("-1", True, "cannot be negative"),
        ("0", False, "at least 1"),
        ("", False, "Enter a quantity"),
        (None, False, "whole number"),
        ("٣", False, "whole number"),
        ("99999999999", False, "far more"),
        (True, False, "whole number"),
    ],
)
def test_parse_quantity_refuses_with_a_message(raw, allow_zero, message):
    with pytest.raises(CartError, match=message):
        parse_quantity(raw, allow_zero=allow_zero)


@pytest.mark.parametrize("raw", ["", "abc", "0", "-3", "1.0", None, "9" * 30])
def test_parse_product_id_refuses(raw):
    with pytest.raises(CartError, match="does not exist"):
        parse_product_id(raw)


async def test_add_creates_the_cart_and_sums_quantities(app, session, add_product):
    product = await add_product(stock=5)
    change = await add_to_cart(session, None, None, product.id, 2)
    assert (change.added, change.quantity, change.item_count) == (2, 2, 2)
    async with sessionmaker_for(app)() as fresh:
        cart = await select_cart_by_token(fresh, change.cart_token)
    change = await add_to_cart(session, None, cart.token, product.id, "3")
    assert (change.cart_id, change.cart_token) == (cart.id, cart.token)
    assert (change.added, change.quantity, change.item_count) == (3, 5, 5)
    assert await cart_contents(app, cart.id) == {product.id: 5}


@pytest.mark.parametrize(
    ("product_kwargs", "already", "adding", "message"),
    [
        ({"stock": 3}, 0, 4, "Only 3 of"),
        ({"stock": 3}, 2, 2, "you already have 2"),
        ({"stock": 0}, 0, 1, "out of stock"),
        ({"is_active": False}, 0, 1, "no longer sold"),
        ({}, 0, 0, "at least 1"),
        ({"stock": 3}, 0, "x", "whole number"),
        ({"stock": 3}, 0, "-2", "cannot be negative"),
    ],
)
async def test_add_refusals_change_nothing_and_carry_the_product_to_show(
    app, session, add_product, product_kwargs, already, adding, message
):
    product = await add_product(**product_kwargs)
    other = await add_product(stock=10)
    cart = await new_cart(app)
    await put(app, cart, other.id, 1)
    if already:
        await put(app, cart, product.id, already)
    before = await cart_contents(app, cart.id)
    with pytest.raises(CartError, match=message) as refused:
        await add_to_cart(session, None, cart.token, product.id, adding)
    assert await cart_contents(app, cart.id) == before
    shown = CartProduct(product.id, product.name, product.stock) if product.is_active else None
    assert refused.value.product == shown


async def test_refused_first_add_creates_no_cart(app, session, add_product):
    product = await add_product(stock=1)
    with pytest.raises(CartError):
        await add_to_cart(session, None, None, product.id, 2)
    with pytest.raises(CartError, match="does not exist") as refused:
        await add_to_cart(session, None, None, 999_999, 1)
    assert refused.value.product is None
    assert await session.scalar(select(func.count()).select_from(Cart)) == 0


async def test_set_quantity_and_remove(app, session, add_product):
    product = await add_product(stock=4)
    cart = await new_cart(app)
    await put(app, cart, product.id, 1)
    async with write_transaction(session):
        change = await set_cart_quantity(session, cart, product.id, 4)
    assert (change.quantity, change.added, change.item_count) == (4, 3, 4)
    async with write_transaction(session):
        change = await set_cart_quantity(session, cart, product.id, 0)
    assert (change.quantity, change.added, change.item_count) == (0, -4, 0)
    assert await cart_contents(app, cart.id) == {}


@pytest.mark.parametrize(
    ("quantity", "deactivate", "message"),
    [(5, False, "Only 4 of"), (-1, False, "negative"), (2, True, "no longer sold")],
)
async def test_set_quantity_refusals_change_nothing(
    app, session, add_product, quantity, deactivate, message
):
    product = await add_product(stock=4)
    cart = await new_cart(app)
    await put(app, cart, product.id, 1)
    if deactivate:
        async with sessionmaker_for(app)() as own, write_transaction(own):
            (await own.get(type(product), product.id)).is_active = False
    with pytest.raises(CartError, match=message):
        async with write_transaction(session):
            await set_cart_quantity(session, cart, product.id, quantity)
    assert await cart_contents(app, cart.id) == {product.id: 1}


async def test_removing_an_inactive_product_still_works(app, session, add_product):
    product = await add_product(stock=4)
    cart = await new_cart(app)
    await put(app, cart, product.id, 1)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        (await own.get(type(product), product.id)).is_active = False
    async with write_transaction(session):
        await set_cart_quantity(session, cart, product.id, 0)
    assert await cart_contents(app, cart.id) == {}


async def test_set_quantity_of_a_product_not_in_the_cart(app, session, add_product):
    product = await add_product()
    cart = await new_cart(app)
    for target in (cart, None):
        with pytest.raises(CartError, match="not in your cart"):
            async with write_transaction(session):
                await set_cart_quantity(session, target, product.id, 1)
    assert await cart_contents(app, cart.id) == {}


async def test_lines_come_in_one_query_with_current_prices(app, add_product):
    products = [await add_product(name=f"P{n}", price_minor=1_000 * (n + 1)) for n in range(6)]
    cart = await new_cart(app)
    for product in products:
        await put(app, cart, product.id, 2)
    engine = app.extensions["db_engine"]
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    async with sessionmaker_for(app)() as db_session:
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            lines = await select_cart_lines(db_session, cart.id)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert [line.name for line in lines] == [f"P{n}" for n in range(6)]
    assert lines[2].unit_price_minor == 3_000 and lines[2].line_total_minor == 6_000


async def test_price_cart_uses_the_database_price_and_the_coupon(
    app, session, add_product, add_coupon
):
    product = await add_product(price_minor=10_000, stock=5)
    await add_coupon("WELCOME10")
    cart = await new_cart(app)
    await put(app, cart, product.id, 2)
    async with write_transaction(session):
        await set_cart_coupon(session, cart, " welcome10 ")
    totals = await price_cart(session, cart, None)
    assert cart.coupon_code == "WELCOME10"
    assert (totals.subtotal_minor, totals.discount_minor, totals.total_minor) == (
        20_000,
        2_000,
        18_000,
    )
    assert totals.coupon_applied and totals.coupon_message is None
    assert totals.item_count == 2 and totals.can_check_out


async def test_coupon_stops_applying_when_the_cart_shrinks(app, session, add_product, add_coupon):
    product = await add_product(price_minor=10_000, stock=5)
    await add_coupon("BIG150", min_subtotal_minor=15_000)
    cart = await new_cart(app)
    await put(app, cart, product.id, 2)
    async with write_transaction(session):
        await set_cart_coupon(session, cart, "BIG150")
    assert (await price_cart(session, cart, None)).discount_minor == 2_000
    await session.commit()
    async with write_transaction(session):
        await set_cart_quantity(session, cart, product.id, 1)
    totals = await price_cart(session, cart, None)
    assert totals.discount_minor == 0 and totals.total_minor == 10_000
    assert totals.coupon_code == "BIG150" and not totals.coupon_applied
    assert "needs a subtotal of at least GH₵ 150.00" in totals.coupon_message


async def test_inactive_and_oversold_lines_are_flagged(app, session, add_product):
    gone = await add_product(name="Gone", price_minor=5_000, stock=5)
    short = await add_product(name="Short", price_minor=1_000, stock=5)
    cart = await new_cart(app)
    await put(app, cart, gone.id, 1)
    await put(app, cart, short.id, 4)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        (await own.get(type(gone), gone.id)).is_active = False
        (await own.get(type(short), short.id)).stock = 2
    totals = await price_cart(session, cart, None)
    assert totals.subtotal_minor == 4_000  # inactive products count for nothing
    assert not totals.can_check_out
    assert totals.problems == [
        "Gone: This product is no longer sold; remove it to check out.",
        "Short: Only 2 left; lower the quantity to check out.",
    ]


async def test_current_cart_never_opens_a_customers_cart_by_token(app, session, make_user):
    user = await make_user()
    user_cart = await new_cart(app, user.id)
    guest_cart = await new_cart(app)
    assert (await select_current_cart(session, None, user_cart.token)) is None
    assert (await select_current_cart(session, None, guest_cart.token)).id == guest_cart.id
    assert (await select_current_cart(session, user.id, guest_cart.token)).id == user_cart.id
    assert await select_cart_by_token(session, "x" * 500) is None


async def test_merge_sums_capped_at_stock_keeps_guest_coupon_and_deletes_guest_cart(
    app, session, make_user, add_product, add_coupon
):
    user = await make_user()
    await add_coupon("WELCOME10")
    shared = await add_product(name="Shared", stock=5)
    guest_only = await add_product(name="Guest only", stock=3)
    user_only = await add_product(name="User only", stock=3)
    user_cart = await new_cart(app, user.id)
    await put(app, user_cart, shared.id, 3)
    await put(app, user_cart, user_only.id, 1)
    guest_cart = await new_cart(app)
    await put(app, guest_cart, shared.id, 4)
    await put(app, guest_cart, guest_only.id, 2)
    async with write_transaction(session):
        await set_cart_coupon(session, guest_cart, "WELCOME10")
    async with write_transaction(session):
        merged = await merge_guest_cart(session, guest_cart.token, user.id)
    assert merged.id == user_cart.id
    assert await cart_contents(app, user_cart.id) == {
        shared.id: 5,  # 3 + 4 capped at the 5 in stock
        guest_only.id: 2,
        user_only.id: 1,
    }
    async with sessionmaker_for(app)() as fresh:
        assert (await fresh.get(Cart, user_cart.id)).coupon_code == "WELCOME10"
        assert await fresh.get(Cart, guest_cart.id) is None
        assert await count_cart_items(fresh, user_cart.id) == 8


async def test_merge_keeps_the_customers_own_coupon(
    app, session, make_user, add_product, add_coupon
):
    user = await make_user()
    await add_coupon("MINE")
    await add_coupon("GUEST")
    product = await add_product()
    user_cart = await new_cart(app, user.id)
    guest_cart = await new_cart(app)
    await put(app, guest_cart, product.id, 1)
    async with write_transaction(session):
        await set_cart_coupon(session, user_cart, "MINE")
        await set_cart_coupon(session, guest_cart, "GUEST")
    async with write_transaction(session):
        await merge_guest_cart(session, guest_cart.token, user.id)
    async with sessionmaker_for(app)() as fresh:
        assert (await fresh.get(Cart, user_cart.id)).coupon_code == "MINE"


async def test_merge_without_a_customer_cart_adopts_the_guest_cart(
    app, session, make_user, add_product
):
    user = await make_user()
    product = await add_product()
    guest_cart = await new_cart(app)
    await put(app, guest_cart, product.id, 2)
    async with write_transaction(session):
        merged = await merge_guest_cart(session, guest_cart.token, user.id)
    assert merged.id == guest_cart.id and merged.user_id == user.id
    assert merged.token != guest_cart.token  # the old guest token no longer names it
    async with sessionmaker_for(app)() as fresh:
        assert (await select_cart_for_user(fresh, user.id)).id == guest_cart.id
        assert await select_current_cart(fresh, None, guest_cart.token) is None


async def test_merge_without_a_guest_cart(app, session, make_user):
    user = await make_user()
    async with write_transaction(session):
        assert await merge_guest_cart(session, None, user.id) is None
        assert await merge_guest_cart(session, "no-such-token", user.id) is None
    user_cart = await new_cart(app, user.id)
    async with write_transaction(session):
        assert (await merge_guest_cart(session, None, user.id)).id == user_cart.id


async def test_merge_skips_inactive_guest_lines(app, session, make_user, add_product):
    user = await make_user()
    product = await add_product()
    user_cart = await new_cart(app, user.id)
    other = await add_product()
    await put(app, user_cart, other.id, 1)
    guest_cart = await new_cart(app)
    await put(app, guest_cart, product.id, 2)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        (await own.get(type(product), product.id)).is_active = False
    async with write_transaction(session):
        await merge_guest_cart(session, guest_cart.token, user.id)
    assert await cart_contents(app, user_cart.id) == {other.id: 1}


async def test_clear_cart_empties_lines_and_coupon(app, session, add_product, add_coupon):
    await add_coupon("WELCOME10")
    product = await add_product()
    cart = await new_cart(app)
    await put(app, cart, product.id, 2)
    async with write_transaction(session):
        await set_cart_coupon(session, cart, "WELCOME10")
    async with write_transaction(session):
        await clear_cart(session, cart.id)
    assert await cart_contents(app, cart.id) == {}
    async with sessionmaker_for(app)() as fresh:
        assert (await fresh.get(Cart, cart.id)).coupon_code is None


@pytest.mark.both_databases
async def test_concurrent_adds_to_one_cart_stay_within_stock(app, add_product):
    product = await add_product(stock=5)
    cart = await new_cart(app)

    async def add_one() -> bool:
        async with sessionmaker_for(app)() as own:
            try:
                await add_to_cart(own, None, cart.token, product.id, 1)
            except CartError:
                return False
        return True

    results = await asyncio.gather(*(add_one() for _ in range(12)))
    assert sum(results) == 5
    assert await cart_contents(app, cart.id) == {product.id: 5}


@pytest.mark.both_databases
async def test_concurrent_first_adds_of_a_customer_make_one_cart(app, make_user, add_product):
    user = await make_user()
    product = await add_product(stock=50)

    async def add_one() -> None:
        async with sessionmaker_for(app)() as own:
            await add_to_cart(own, user.id, None, product.id, 1)

    await asyncio.gather(*(add_one() for _ in range(8)))
    async with sessionmaker_for(app)() as fresh:
        carts = (await fresh.scalars(select(Cart).where(Cart.user_id == user.id))).all()
    assert len(carts) == 1
    assert await cart_contents(app, carts[0].id) == {product.id: 8}


@pytest.mark.both_databases
async def test_concurrent_first_carts_of_a_customer_are_one_cart(app, make_user):
    """Adds of one customer take turns within a worker; across workers the unique user_id
    decides, and the loser of the race goes on with the winner's cart."""
    user = await make_user()

    async def make_one() -> int:
        async with sessionmaker_for(app)() as own, write_transaction(own):
            return (await insert_cart(own, user.id)).id

    cart_ids = await asyncio.gather(*(make_one() for _ in range(8)))
    assert len(set(cart_ids)) == 1
    async with sessionmaker_for(app)() as fresh:
        assert (await select_cart_for_user(fresh, user.id)).id == cart_ids[0]


@pytest.fixture(name="add_current", params=["app engine", "engine of its own"])
async def _add_current(request, app, database_url):
    """One request's add, the shopper's cart found by customer id or guest token. On SQLite the
    app's engine has the batch writer; an engine of its own (a script's) has none, so every add
    there is a write transaction, as on PostgreSQL."""
    if request.param == "app engine":
        sessionmaker = sessionmaker_for(app)
    else:
        sessionmaker = make_sessionmaker(make_engine(database_url))
    assert (sqlite_batch_writer(sessionmaker.kw["bind"]) is not None) == (
        request.param == "app engine" and database_url.startswith("sqlite")
    )

    async def add(user_id, cart_token, product_id, quantity):
        async with sessionmaker() as own:
            return await add_to_cart(own, user_id, cart_token, product_id, quantity)

    yield add
    if request.param != "app engine":
        await sessionmaker.kw["bind"].dispose()


@pytest.mark.both_databases
async def test_add_to_cart_finds_makes_and_refuses(app, make_user, add_product, add_current):
    phone = await add_product(name="Phone", stock=3)
    case = await add_product(name="Case", stock=10)
    first = await add_current(None, None, phone.id, 1)
    assert first.cart_token and (first.quantity, first.item_count) == (1, 1)
    again = await add_current(None, first.cart_token, phone.id, 2)
    assert (again.cart_id, again.quantity, again.item_count) == (first.cart_id, 3, 3)
    other = await add_current(None, first.cart_token, case.id, 4)
    assert (other.quantity, other.item_count, other.product.name) == (4, 7, "Case")
    refusals = [
        (phone.id, 1, "Only 3 of Phone in stock; you already have 3"),
        (case.id, 7, "Only 10 of Case in stock; you already have 4"),
        (999_999, 1, "does not exist"),
    ]
    for product_id, quantity, message in refusals:
        with pytest.raises(CartError, match=message):
            await add_current(None, first.cart_token, product_id, quantity)
    assert await cart_contents(app, first.cart_id) == {phone.id: 3, case.id: 4}

    user = await make_user()
    mine = await add_current(user.id, first.cart_token, case.id, 2)
    assert mine.cart_id != first.cart_id and mine.item_count == 2
    assert mine.cart_token is None  # a customer's cart is found by their id, not a token
    mine = await add_current(user.id, None, case.id, 1)
    assert (mine.quantity, mine.item_count) == (3, 3)
    async with sessionmaker_for(app)() as fresh:
        user_cart = await select_cart_for_user(fresh, user.id)
    # A customer's cart token held by a guest browser opens a new guest cart instead.
    guest = await add_current(None, user_cart.token, case.id, 1)
    assert guest.cart_id not in (user_cart.id, first.cart_id) and guest.item_count == 1
    assert guest.cart_token not in (None, user_cart.token)
    assert await cart_contents(app, user_cart.id) == {case.id: 3}


@pytest.mark.both_databases
async def test_add_to_cart_refuses_sold_out_and_inactive(app, add_product, add_current):
    sold_out = await add_product(name="Gone", stock=0)
    hidden = await add_product(name="Hidden", is_active=False)
    kept = await add_product(stock=5)
    cart = await add_current(None, None, kept.id, 1)
    for product_id, message in ((sold_out.id, "Gone is out of stock"), (hidden.id, "no longer")):
        with pytest.raises(CartError, match=message):
            await add_current(None, cart.cart_token, product_id, 1)
        with pytest.raises(CartError, match=message):
            await add_current(None, None, product_id, 1)
    assert await cart_contents(app, cart.cart_id) == {kept.id: 1}
    async with sessionmaker_for(app)() as fresh:
        assert await fresh.scalar(select(func.count()).select_from(Cart)) == 1


@pytest.mark.both_databases
async def test_concurrent_adds_to_cart_keep_stock_and_badge(app, add_product, add_current):
    scarce = await add_product(stock=5)
    others = [await add_product(stock=50) for _ in range(6)]
    token = (await add_current(None, None, others[0].id, 1)).cart_token

    async def add_scarce() -> bool:
        try:
            await add_current(None, token, scarce.id, 1)
        except CartError:
            return False
        return True

    assert sum(await asyncio.gather(*(add_scarce() for _ in range(12)))) == 5
    # One cart's adds are serialised, so each badge count includes every add before it.
    changes = await asyncio.gather(*(add_current(None, token, product.id, 1) for product in others))
    assert sorted(change.item_count for change in changes) == list(range(7, 13))


async def test_a_repeat_add_in_a_write_transaction_takes_two_statements(
    app, database_url, add_product
):
    """Without the batch writer (an engine of its own), the common add is one upsert and one
    read between BEGIN and COMMIT."""
    product = (await add_product(stock=100)).id
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as own:
            token = (await add_to_cart(own, None, None, product, 1)).cart_token
            statements: list[str] = []

            def record(_conn, _cursor, statement, *_args):
                statements.append(statement)

            event.listen(engine.sync_engine, "before_cursor_execute", record)
            try:
                change = await add_to_cart(own, None, token, product, 2)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", record)
    finally:
        await engine.dispose()
    assert (change.quantity, change.item_count) == (3, 3)
    work = [s for s in statements if s.split()[0].upper() not in ("BEGIN", "COMMIT")]
    assert len(work) == 2, statements
    assert work[0].lstrip().upper().startswith("INSERT INTO CART_ITEMS")


async def test_a_repeat_add_on_sqlite_goes_to_the_batch_writer(app, add_product):
    product = await add_product(stock=100)
    async with sessionmaker_for(app)() as own:
        token = (await add_to_cart(own, None, None, product.id, 1)).cart_token
        with counted_statements(app) as statements:
            change = await add_to_cart(own, None, token, product.id, 2)
    assert (change.added, change.quantity, change.item_count) == (2, 3, 3)
    assert statements == []  # the batch writer's own connection did the work
    assert await cart_contents(app, change.cart_id) == {product.id: 3}
