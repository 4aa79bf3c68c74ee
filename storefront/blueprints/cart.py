"""TODO-cart"""

from quart import Blueprint

blueprint = Blueprint("cart", __name__)
