"""A product's stock in the back office: adjusting it with JavaScript off (303, flash) and with
htmx (the panel and the status line), refusals that change nothing, inline validation, the
movements paged, and the shop following at once."""

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import AuditEntry, Product, StockMovement
from storefront.models.stock import StockMovementKind
from storefront.services.stock import move_stock, select_stock_mismatches
from tests.conftest import CSRF_TOKEN

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="staff")
async def _staff(make_user):
    return await make_user(role="staff", email="esi@shop.test")


async def stock_and_movements(app, product) -> tuple[int, list[tuple[int, str, str]]]:
    async with sessionmaker_for(app)() as session:
        stock = await session.scalar(select(Product.stock).where(Product.id == product.id))
        rows = await session.execute(
            select(StockMovement.change, StockMovement.kind, StockMovement.reason)
            .where(StockMovement.product_id == product.id)
            .order_by(StockMovement.id)
        )
        return stock, [tuple(row) for row in rows]


async def post_stock(client, product, change: str, reason: str = "Counted", headers=None):
    return await client.post(
        f"/admin/products/{product.id}/stock",
        form={"csrf_token": CSRF_TOKEN, "change": change, "reason": reason},
        headers=headers or {},
    )


async def test_staff_adjust_stock_without_javascript(app, client, sign_in, staff, add_product):
    product = await add_product(name="Kente Stole", stock=8)
    sign_in(client, staff)
    response = await post_stock(client, product, "-3", "  Two   torn, one lost ")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/products/{product.id}/stock"
    assert await stock_and_movements(app, product) == (
        5,
        [(8, "restock", "Test stock"), (-3, "adjustment", "Two torn, one lost")],
    )
    page = await (await client.get(response.headers["Location"])).get_data(as_text=True)
    status_line = page.split('id="admin-status"')[1].split("</div>")[0]
    assert "Stock changed by -3: 5 now." in status_line
    assert 'class="stock-count">5<' in page and "Two torn, one lost" in page
    assert "esi@shop.test" in page
    async with sessionmaker_for(app)() as session:
        [entry] = await session.scalars(select(AuditEntry))
    assert (entry.actor_id, entry.action, entry.record_type, entry.record_id) == (
        staff.id,
        "product.stock",
        "product",
        str(product.id),
    )
    assert entry.before == {"stock": 8, "change": None, "reason": None}
    assert entry.after == {"stock": 5, "change": -3, "reason": "Two torn, one lost"}


async def test_with_htmx_the_panel_comes_back_with_the_status_line(
    app, client, sign_in, staff, add_product
):
    product = await add_product(stock=2)
    sign_in(client, staff)
    response = await post_stock(client, product, "+10", "Delivery from Kumasi", HTMX)
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="product-stock"')
    assert 'class="stock-count">12<' in html and "Delivery from Kumasi" in html
    assert 'id="admin-status"' in html and 'hx-swap-oob="innerHTML"' in html
    assert "Stock changed by +10: 12 now." in html
    assert "<html" not in html
    assert (await stock_and_movements(app, product))[0] == 12


@pytest.mark.parametrize(
    ("change", "reason", "status", "message"),
    [
        ("0", "Counted", 422, "A change of 0 changes nothing"),
        ("", "Counted", 422, "Enter the change"),
        ("2.5", "Counted", 422, "Enter a whole number"),
        ("abc", "Counted", 422, "Enter a whole number"),
        ("١٢", "Counted", 422, "Enter a whole number"),
        ("9999999", "Counted", 422, "at most 1,000,000 at once"),
        ("-1", "   ", 422, "Say why the stock changes"),
        ("-4", "Counted", 409, "has 3 in stock: a change of -4 would leave -1. Nothing changed."),
    ],
)
async def test_refusals_say_why_and_change_nothing(
    app, client, sign_in, staff, add_product, change, reason, status, message
):
    product = await add_product(stock=3)
    sign_in(client, staff)
    for headers in (None, HTMX):
        response = await post_stock(client, product, change, reason, headers)
        assert response.status_code == status
        html = await response.get_data(as_text=True)
        assert message in html
        assert 'aria-invalid="true"' in html
    assert await stock_and_movements(app, product) == (3, [(3, "restock", "Test stock")])
    async with sessionmaker_for(app)() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 0


async def test_an_unknown_product_is_404(client, sign_in, staff):
    sign_in(client, staff)
    assert (await post_stock(client, type("P", (), {"id": 999})(), "1")).status_code == 404
    assert (await client.get("/admin/products/999/stock")).status_code == 404


async def test_inline_validation_of_the_change(client, sign_in, staff, add_product):
    product = await add_product(stock=3)
    sign_in(client, staff)
    url = f"/admin/products/{product.id}/stock/check"
    for change, message in (
        ("-5", "Only 3 in stock: -5 would leave -2."),
        ("0", "A change of 0 changes nothing"),
        ("x", "Enter a whole number"),
        ("-3", ""),
        ("+7", ""),
    ):
        response = await client.get(url, query_string={"change": change}, headers=HTMX)
        assert response.status_code == 200
        html = await response.get_data(as_text=True)
        assert html.startswith('<p id="stock-change-error"')
        assert message in html
        if not message:
            assert "></p>" in html and "role=" not in html


async def test_movements_are_paged_newest_first(app, client, sign_in, staff, add_product):
    product = await add_product(stock=30)
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for number in range(1, 25):
            await move_stock(
                session, product.id, -1, StockMovementKind.ADJUSTMENT, reason=f"Count {number}"
            )
    sign_in(client, staff)
    first = await (await client.get(f"/admin/products/{product.id}/stock")).get_data(as_text=True)
    assert first.index("Count 24") < first.index("Count 23")
    assert "Count 5<" in first and "Count 4<" not in first  # 20 a page: 24 down to 5
    older = first.split('href="')[1:]
    older_link = next(link.split('"')[0] for link in older if "?before=" in link)
    response = await client.get(older_link.replace("&amp;", "&"), headers=HTMX)
    second = await response.get_data(as_text=True)
    assert second.lstrip().startswith('<section id="product-stock"')
    assert "Count 4<" in second and "Count 1<" in second and "Test stock" in second
    assert "Count 5<" not in second and "&larr; Newest" in second
    bad = await client.get(f"/admin/products/{product.id}/stock?before=x")
    assert bad.status_code == 400


async def test_the_shop_shows_the_new_stock_at_once(app, client, sign_in, staff, add_product):
    product = await add_product(name="Shea Butter", stock=20)
    shopper = app.test_client()
    before = await (await shopper.get(f"/products/{product.slug}")).get_data(as_text=True)
    assert "In stock" in before
    sign_in(client, staff)
    assert (await post_stock(client, product, "-18", "Sold at the market")).status_code == 303
    after = await (await shopper.get(f"/products/{product.slug}")).get_data(as_text=True)
    assert "Only 2 left" in after
    assert (await post_stock(client, product, "-2", "Sold at the market")).status_code == 303
    gone = await (await shopper.get(f"/products/{product.slug}")).get_data(as_text=True)
    assert "Out of stock" in gone
    async with sessionmaker_for(app)() as session:
        assert await select_stock_mismatches(session) == []
