"""Mail Manager address lists through its API: the AddressListMembers port on AWS.

A list is named by its physical AddressListId (the stack output RecipientsAddressListId for the
directory's list). Members are added and removed one call each; botocore retries throttling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mxgate.adapters.aws.failures import transient_failures


class MailManagerAddressLists:
    def __init__(self, client: Any) -> None:
        self.client = client  # a mailmanager client

    def members(self, list_id: str) -> list[str]:
        pages = self.client.get_paginator("list_members_of_address_list")
        with transient_failures(f"Mail Manager ListMembersOfAddressList {list_id}"):
            return [
                str(saved["Address"])
                for page in pages.paginate(AddressListId=list_id)
                for saved in page["Addresses"]
            ]

    def add(self, list_id: str, addresses: Sequence[str]) -> None:
        for address in addresses:
            with transient_failures(f"Mail Manager RegisterMemberToAddressList {list_id}"):
                self.client.register_member_to_address_list(AddressListId=list_id, Address=address)

    def remove(self, list_id: str, addresses: Sequence[str]) -> None:
        for address in addresses:
            with transient_failures(f"Mail Manager DeregisterMemberFromAddressList {list_id}"):
                self.client.deregister_member_from_address_list(
                    AddressListId=list_id, Address=address
                )
