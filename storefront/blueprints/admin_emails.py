"""TODO-admin_emails"""

from quart import Blueprint

blueprint = Blueprint("admin_emails", __name__)
