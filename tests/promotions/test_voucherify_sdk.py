"""The official voucherify SDK (pinned dev dependency) runs Voucherify's two basic flows against a live
Perkflow server over HTTP, with nothing changed but the host."""

from __future__ import annotations

from typing import Any

import pytest
import voucherify
from voucherify import (
    CampaignsApi,
    LoyaltiesApi,
    PublicationsApi,
    RedemptionsApi,
    RewardsApi,
    ValidationsApi,
    VouchersApi,
)
from voucherify.exceptions import BadRequestException, NotFoundException

from perkflow.sandbox.server import ServerThread
from tests.promotions.conftest import app_headers

# The SDK marks the legacy /v1/loyalties endpoints deprecated; they remain supported (contract §1).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def client(server: ServerThread, admin_key: str) -> Any:
    config = voucherify.Configuration(host=server.url, api_key=app_headers(admin_key))
    with voucherify.ApiClient(config) as api_client:
        yield api_client


def test_coupon_flow_with_the_sdk(client: Any) -> None:
    campaigns = CampaignsApi(client)
    created = campaigns.create_campaign(
        voucherify.CampaignsCreateRequestBody(
            name="Ten off",
            campaign_type="DISCOUNT_COUPONS",
            type="STATIC",
            vouchers_count=3,
            voucher=voucherify.CampaignsCreateRequestBodyVoucher(
                type="DISCOUNT_VOUCHER",
                discount=voucherify.Discount(type="AMOUNT", amount_off=1000),
                redemption=voucherify.CampaignsCreateRequestBodyVoucherRedemption(quantity=1),
                code_config=voucherify.CodeConfig(pattern="TEN-####", charset="0123456789ABCDEF"),
            ),
        )
    )
    assert created.campaign_type == "DISCOUNT_COUPONS" and created.vouchers_count == 3
    assert created.voucher.code_config.length == 4 and created.creation_status == "DONE"
    assert campaigns.get_campaign(created.id).name == "Ten off"

    publications = PublicationsApi(client)
    body = voucherify.PublicationsCreateRequestBody(
        campaign=voucherify.CreatePublicationCampaign(name=created.id),
        customer=voucherify.Customer(source_id="ana"),
        source_id="email-1:ana",
        channel="API",
    )
    first = publications.create_publication(publications_create_request_body=body)
    again = publications.create_publication(publications_create_request_body=body)
    assert first.voucher.code.startswith("TEN-") and first.result == "SUCCESS"
    assert (again.id, again.voucher.code) == (first.id, first.voucher.code)
    code = first.voucher.code

    order = voucherify.Order(amount=4500)
    redeemables = [voucherify.ValidationsValidateRequestBodyRedeemablesItem(object="voucher", id=code)]
    validation = ValidationsApi(client).validate_stacked_discounts(
        voucherify.ValidationsValidateRequestBody(
            redeemables=redeemables, order=order, customer=voucherify.Customer(source_id="ana")
        )
    )
    assert validation.valid is True and validation.order.total_discount_amount == 1000
    assert validation.redeemables[0].status == "APPLICABLE"

    redemptions = RedemptionsApi(client)
    redeemed = redemptions.redeem_stacked_discounts(
        voucherify.RedemptionsRedeemRequestBody(
            redeemables=[voucherify.RedemptionsRedeemRequestBodyRedeemablesItem(object="voucher", id=code)],
            order=order,
            customer=voucherify.Customer(source_id="ana"),
        )
    )
    redemption = redeemed.redemptions[0]
    assert redemption.status == "SUCCEEDED" and redemption.amount == 1000
    assert redemption.voucher.redemption.redeemed_quantity == 1
    with pytest.raises(BadRequestException) as used:
        redemptions.redeem_stacked_discounts(
            voucherify.RedemptionsRedeemRequestBody(
                redeemables=[
                    voucherify.RedemptionsRedeemRequestBodyRedeemablesItem(object="voucher", id=code)
                ],
                order=order,
                customer=voucherify.Customer(source_id="ana"),
            )
        )
    assert '"key":"quantity_exceeded"' in used.value.body

    rolled = redemptions.rollback_redemption(redemption.id, reason="returned")
    assert rolled.object == "redemption_rollback" and rolled.redemption == redemption.id
    assert rolled.voucher.redemption.redeemed_quantity == 0
    with pytest.raises(BadRequestException) as twice:
        redemptions.rollback_redemption(redemption.id)
    assert '"key":"already_rolled_back"' in twice.value.body

    listed = VouchersApi(client).list_vouchers(customer="ana")
    assert [v.code for v in listed.vouchers] == [code] and listed.total == 1
    with pytest.raises(NotFoundException):
        VouchersApi(client).get_voucher("NO-SUCH-CODE")


def test_loyalty_flow_with_the_sdk(client: Any) -> None:
    loyalties = LoyaltiesApi(client)
    program = loyalties.create_loyalty_program(
        voucherify.LoyaltiesCreateCampaignRequestBody(
            name="Club",
            campaign_type="LOYALTY_PROGRAM",
            type="AUTO_UPDATE",
            voucher=voucherify.CampaignLoyaltyVoucher(
                type="LOYALTY_CARD",
                loyalty_card=voucherify.CampaignLoyaltyCard(points=0),
                code_config=voucherify.CodeConfig(pattern="CLUB-########"),
            ),
        )
    )
    assert program.campaign_type == "LOYALTY_PROGRAM" and program.join_once is True

    card = loyalties.add_member(
        program.id,
        voucherify.LoyaltiesMembersCreateRequestBody(customer=voucherify.Customer(source_id="ben")),
    )
    assert card.type == "LOYALTY_CARD" and card.holder_id == "ben" and card.loyalty_card.balance == 0
    same = loyalties.add_member(
        program.id,
        voucherify.LoyaltiesMembersCreateRequestBody(customer=voucherify.Customer(source_id="ben")),
    )
    assert same.code == card.code  # one card per member

    balance = loyalties.update_loyalty_card_balance(
        card.code, voucherify.LoyaltiesMembersBalanceUpdateRequestBody(points=250, reason="welcome")
    )
    assert (balance.points, balance.balance, balance.type) == (250, 250, "loyalty_card")

    reward = RewardsApi(client).create_reward(
        voucherify.RewardsCreateRequestBody(
            name="Free coffee",
            parameters=voucherify.RewardsCreateRequestBodyParameters(),
            stock=None,
        )
    )
    assert reward.object == "reward" and reward.type == "MATERIAL"
    assignment = loyalties.create_reward_assignment1(
        program.id,
        [
            voucherify.LoyaltiesRewardsCreateAssignmentItemRequestBody(
                reward=reward.id,
                parameters=voucherify.LoyaltiesRewardsCreateAssignmentItemRequestBodyParameters(
                    loyalty=voucherify.LoyaltiesRewardsCreateAssignmentItemRequestBodyParametersLoyalty(
                        points=100
                    )
                ),
            )
        ],
    )
    assert assignment.reward_id == reward.id and assignment.parameters.loyalty.points == 100

    redemption = loyalties.redeem_reward(
        card.code,
        voucherify.LoyaltiesMembersRedemptionRedeemRequestBody(
            reward=voucherify.LoyaltiesMembersRedemptionRedeemRequestBodyReward(id=reward.id)
        ),
    )
    assert redemption.status == "SUCCEEDED" and redemption.loyalty_card.points == 100
    assert redemption.reward.id == reward.id
    after = VouchersApi(client).get_voucher(card.code)
    assert after.loyalty_card.balance == 150
    with pytest.raises(BadRequestException) as short:
        loyalties.update_loyalty_card_balance(
            card.code, voucherify.LoyaltiesMembersBalanceUpdateRequestBody(points=-1000)
        )
    assert '"key":"loyalty_card_points_exceeded"' in short.value.body
