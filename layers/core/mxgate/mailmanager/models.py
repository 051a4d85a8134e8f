"""Pydantic models of the AWS::SES::MailManager* CloudFormation resources.

Field names and enum spellings follow the CloudFormation schema (and the botocore
`mailmanager` model), so a template that loads here is a template CloudFormation takes.
One module past the usual size on purpose: one model per CloudFormation property type, in the
order of the schema, which is read side by side with it.
"""

from __future__ import annotations

import functools
import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mxgate.authn.model import DmarcPolicy, Verdict

_NAME = r"^[A-Za-z0-9_\-]+$"
_ID_OR_ARN = r"^[a-zA-Z0-9:_/+=,@.#-]+$"
_EMAIL = r"^[a-zA-Z0-9._+-]+@[a-zA-Z0-9.-]+$"
_SECRET_ARN = r"^arn:(aws|aws-cn|aws-us-gov|aws-eusc):secretsmanager:[a-z0-9-]+:\d{12}:secret:[a-zA-Z0-9/_+=,.@-]+$"  # noqa: S105 -- a pattern


def _ipv4_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        network = None
    if "/" not in value or not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"{value!r} is not an IPv4 CIDR such as 192.0.2.0/24")
    return value


def _ipv6_cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        network = None
    if "/" not in value or not isinstance(network, ipaddress.IPv6Network):
        raise ValueError(f"{value!r} is not an IPv6 CIDR such as 2001:db8::/32")
    return value


def _ip_or_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return value


def _one_line(value: str) -> str:
    # AWS documents no pattern for a header value; a line break would inject header fields.
    if any(c in value for c in "\r\n\0"):
        raise ValueError("a header value cannot contain line breaks or NUL")
    return value


Ipv4Cidr = Annotated[str, AfterValidator(_ipv4_cidr)]
Ipv6Cidr = Annotated[str, Field(max_length=49), AfterValidator(_ipv6_cidr)]


class CfnModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OneOf(CfnModel):
    """A CloudFormation UNION: exactly one member may be set."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            members = ", ".join(type(self).model_fields)
            raise ValueError(f"set exactly one of {members} (found {len(chosen)})")
        return self

    @functools.cached_property  # asked several times a message for each rule action
    def kind(self) -> str:
        """The name of the member that is set."""
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)


# ----------------------------------------------------------------------------- traffic policy


class AcceptAction(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class StringOperator(StrEnum):
    EQUALS = "EQUALS"
    NOT_EQUALS = "NOT_EQUALS"
    STARTS_WITH = "STARTS_WITH"
    ENDS_WITH = "ENDS_WITH"
    CONTAINS = "CONTAINS"


class IpOperator(StrEnum):
    CIDR_MATCHES = "CIDR_MATCHES"
    NOT_CIDR_MATCHES = "NOT_CIDR_MATCHES"


class BooleanOperator(StrEnum):
    IS_TRUE = "IS_TRUE"
    IS_FALSE = "IS_FALSE"


class TlsProtocol(StrEnum):
    TLS1_2 = "TLS1_2"
    TLS1_3 = "TLS1_3"


class TlsOperator(StrEnum):
    MINIMUM_TLS_VERSION = "MINIMUM_TLS_VERSION"
    IS = "IS"


class AddonAnalysis(CfnModel):
    Analyzer: Annotated[str, Field(pattern=_ID_OR_ARN)]
    ResultField: Annotated[
        str, Field(min_length=1, max_length=256, pattern=r"^(addon\.)?[\sa-zA-Z0-9_]+$")
    ]


class IngressStringToEvaluate(OneOf):
    Attribute: Literal["RECIPIENT"] | None = None
    Analysis: AddonAnalysis | None = None


class IngressStringExpression(CfnModel):
    Evaluate: IngressStringToEvaluate
    Operator: StringOperator
    Values: Annotated[list[str], Field(min_length=1)]


class IngressIpToEvaluate(CfnModel):
    Attribute: Literal["SENDER_IP"]


class IngressIpv4Expression(CfnModel):
    Evaluate: IngressIpToEvaluate
    Operator: IpOperator
    Values: Annotated[list[Ipv4Cidr], Field(min_length=1)]


class IngressIpv6ToEvaluate(CfnModel):
    Attribute: Literal["SENDER_IPV6"]


class IngressIpv6Expression(CfnModel):
    Evaluate: IngressIpv6ToEvaluate
    Operator: IpOperator
    Values: Annotated[list[Ipv6Cidr], Field(min_length=1)]


class IngressTlsProtocolToEvaluate(CfnModel):
    Attribute: Literal["TLS_PROTOCOL"]


class IngressTlsProtocolExpression(CfnModel):
    Evaluate: IngressTlsProtocolToEvaluate
    Operator: TlsOperator
    Value: TlsProtocol


class IngressIsInAddressList(CfnModel):
    Attribute: Literal["RECIPIENT"]
    AddressLists: Annotated[list[str], Field(min_length=1, max_length=1)]


class IngressBooleanToEvaluate(OneOf):
    Analysis: AddonAnalysis | None = None
    IsInAddressList: IngressIsInAddressList | None = None


class IngressBooleanExpression(CfnModel):
    Evaluate: IngressBooleanToEvaluate
    Operator: BooleanOperator


class PolicyCondition(OneOf):
    StringExpression: IngressStringExpression | None = None
    IpExpression: IngressIpv4Expression | None = None
    Ipv6Expression: IngressIpv6Expression | None = None
    TlsExpression: IngressTlsProtocolExpression | None = None
    BooleanExpression: IngressBooleanExpression | None = None


class PolicyStatement(CfnModel):
    Action: AcceptAction
    Conditions: Annotated[list[PolicyCondition], Field(min_length=1, max_length=10)]


class Tag(CfnModel):
    Key: Annotated[str, Field(min_length=1, max_length=128)]
    Value: Annotated[str, Field(max_length=256)]


DEFAULT_MAX_MESSAGE_SIZE = 40 * 1024 * 1024  # Mail Manager's own limit per message


class TrafficPolicy(CfnModel):
    DefaultAction: AcceptAction
    PolicyStatements: Annotated[list[PolicyStatement], Field(max_length=20)]
    MaxMessageSizeBytes: Annotated[int | None, Field(ge=1)] = None
    TrafficPolicyName: Annotated[str | None, Field(min_length=3, max_length=63, pattern=_NAME)] = (
        None
    )
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None

    @property
    def max_message_size(self) -> int:
        return self.MaxMessageSizeBytes or DEFAULT_MAX_MESSAGE_SIZE


# ----------------------------------------------------------------------------- rule set


class StringAttribute(StrEnum):
    MAIL_FROM = "MAIL_FROM"
    HELO = "HELO"
    RECIPIENT = "RECIPIENT"
    SENDER = "SENDER"
    FROM = "FROM"
    SUBJECT = "SUBJECT"
    TO = "TO"
    CC = "CC"


class BooleanAttribute(StrEnum):
    READ_RECEIPT_REQUESTED = "READ_RECEIPT_REQUESTED"
    TLS = "TLS"
    TLS_WRAPPED = "TLS_WRAPPED"


class AddressListAttribute(StrEnum):
    RECIPIENT = "RECIPIENT"
    MAIL_FROM = "MAIL_FROM"
    SENDER = "SENDER"
    FROM = "FROM"
    TO = "TO"
    CC = "CC"


class NumberOperator(StrEnum):
    EQUALS = "EQUALS"
    NOT_EQUALS = "NOT_EQUALS"
    LESS_THAN = "LESS_THAN"
    GREATER_THAN = "GREATER_THAN"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL"


class EqualsOperator(StrEnum):
    EQUALS = "EQUALS"
    NOT_EQUALS = "NOT_EQUALS"


class ClientCertificateField(StrEnum):
    CN = "CN"
    SAN_RFC822_NAME = "SAN_RFC822_NAME"
    SAN_DNS_NAME = "SAN_DNS_NAME"
    SAN_DIRECTORY_NAME = "SAN_DIRECTORY_NAME"
    SAN_UNIFORM_RESOURCE_IDENTIFIER = "SAN_UNIFORM_RESOURCE_IDENTIFIER"
    SAN_IP_ADDRESS = "SAN_IP_ADDRESS"
    SAN_REGISTERED_ID = "SAN_REGISTERED_ID"
    SERIAL_NUMBER = "SERIAL_NUMBER"


class RuleStringToEvaluate(OneOf):
    Attribute: StringAttribute | None = None
    MimeHeaderAttribute: Annotated[str | None, Field(pattern=r"^X-[a-zA-Z0-9-]{1,256}$")] = None
    Analysis: AddonAnalysis | None = None
    ClientCertificateAttribute: ClientCertificateField | None = None


class RuleStringExpression(CfnModel):
    Evaluate: RuleStringToEvaluate
    Operator: StringOperator
    Values: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=4096)]],
        Field(min_length=1, max_length=10),
    ]


class RuleIsInAddressList(CfnModel):
    Attribute: AddressListAttribute
    AddressLists: Annotated[list[str], Field(min_length=1, max_length=1)]


class RuleBooleanToEvaluate(OneOf):
    Attribute: BooleanAttribute | None = None
    Analysis: AddonAnalysis | None = None
    IsInAddressList: RuleIsInAddressList | None = None


class RuleBooleanExpression(CfnModel):
    Evaluate: RuleBooleanToEvaluate
    Operator: BooleanOperator


class RuleNumberToEvaluate(CfnModel):
    Attribute: Literal["MESSAGE_SIZE"]


class RuleNumberExpression(CfnModel):
    Evaluate: RuleNumberToEvaluate
    Operator: NumberOperator
    Value: float


class RuleIpToEvaluate(CfnModel):
    Attribute: Literal["SOURCE_IP"]


class RuleIpExpression(CfnModel):
    Evaluate: RuleIpToEvaluate
    Operator: IpOperator
    Values: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=43), AfterValidator(_ip_or_cidr)]],
        Field(min_length=1, max_length=10),
    ]


class RuleVerdictToEvaluate(OneOf):
    Attribute: Literal["SPF", "DKIM"] | None = None
    Analysis: AddonAnalysis | None = None


class RuleVerdictExpression(CfnModel):
    Evaluate: RuleVerdictToEvaluate
    Operator: EqualsOperator
    Values: Annotated[list[Verdict], Field(min_length=1, max_length=10)]


class RuleDmarcExpression(CfnModel):
    Operator: EqualsOperator
    Values: Annotated[list[DmarcPolicy], Field(min_length=1, max_length=10)]


class RuleCondition(OneOf):
    BooleanExpression: RuleBooleanExpression | None = None
    StringExpression: RuleStringExpression | None = None
    NumberExpression: RuleNumberExpression | None = None
    IpExpression: RuleIpExpression | None = None
    VerdictExpression: RuleVerdictExpression | None = None
    DmarcExpression: RuleDmarcExpression | None = None


class FailurePolicy(StrEnum):
    CONTINUE = "CONTINUE"
    DROP = "DROP"


_ROLE = Annotated[str, Field(min_length=20, max_length=2048, pattern=_ID_OR_ARN)]
_NAME_OR_ARN = Annotated[str, Field(min_length=1, max_length=2048, pattern=_ID_OR_ARN)]


class DropAction(CfnModel):
    pass


class RelayAction(CfnModel):
    Relay: _NAME_OR_ARN
    MailFrom: Literal["PRESERVE", "REPLACE"] | None = None
    ActionFailurePolicy: FailurePolicy | None = None


class ArchiveAction(CfnModel):
    TargetArchive: _NAME_OR_ARN
    ActionFailurePolicy: FailurePolicy | None = None


class S3Action(CfnModel):
    RoleArn: _ROLE
    S3Bucket: Annotated[str, Field(min_length=1, max_length=62, pattern=r"^[a-zA-Z0-9.-]+$")]
    S3Prefix: Annotated[
        str | None, Field(min_length=1, max_length=62, pattern=r"^[a-zA-Z0-9!_.*'()/-]+$")
    ] = None
    S3SseKmsKeyId: Annotated[
        str | None, Field(min_length=20, max_length=2048, pattern=r"^[a-zA-Z0-9-:/]+$")
    ] = None
    ActionFailurePolicy: FailurePolicy | None = None


class SendAction(CfnModel):
    RoleArn: _ROLE
    ActionFailurePolicy: FailurePolicy | None = None


class AddHeaderAction(CfnModel):
    HeaderName: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[xX]\-[a-zA-Z0-9\-]+$")
    ]
    HeaderValue: Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_one_line)]


class ReplaceRecipientAction(CfnModel):
    ReplaceWith: Annotated[
        list[Annotated[str, Field(max_length=254, pattern=_EMAIL)]] | None,
        Field(min_length=1, max_length=100),
    ] = None


class DeliverToMailboxAction(CfnModel):
    MailboxArn: _NAME_OR_ARN
    RoleArn: _ROLE
    ActionFailurePolicy: FailurePolicy | None = None


class DeliverToQBusinessAction(CfnModel):
    ApplicationId: Annotated[str, Field(min_length=36, max_length=36, pattern=r"^[a-z0-9-]+$")]
    IndexId: Annotated[str, Field(min_length=36, max_length=36, pattern=r"^[a-z0-9-]+$")]
    RoleArn: _ROLE
    ActionFailurePolicy: FailurePolicy | None = None


class SnsAction(CfnModel):
    TopicArn: Annotated[
        str,
        Field(
            min_length=20,
            max_length=2048,
            pattern=r"^arn:(aws|aws-cn|aws-us-gov|aws-eusc):sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$",
        ),
    ]
    RoleArn: _ROLE
    Encoding: Literal["UTF-8", "BASE64"] | None = None
    PayloadType: Literal["HEADERS", "CONTENT"] | None = None
    ActionFailurePolicy: FailurePolicy | None = None


class BounceAction(CfnModel):
    RoleArn: _ROLE
    Sender: Annotated[str, Field(max_length=254, pattern=_EMAIL)]
    StatusCode: Annotated[str, Field(pattern=r"^[45]\.[0-9]{1,3}\.[0-9]{1,3}$")]
    SmtpReplyCode: Annotated[str, Field(pattern=r"^[45][0-9][0-9]$")]
    DiagnosticMessage: Annotated[
        str, Field(min_length=1, max_length=256, pattern=r"^[\x20-\x7e]+$")
    ]
    Message: Annotated[
        str | None, Field(min_length=1, max_length=500, pattern=r"^[\r\n\x20-\x7e]+$")
    ] = None
    ActionFailurePolicy: FailurePolicy | None = None


class InvokeLambdaAction(CfnModel):
    FunctionArn: Annotated[str, Field(min_length=20, max_length=2048, pattern=_ID_OR_ARN)]
    InvocationType: Literal["EVENT", "REQUEST_RESPONSE"]
    RoleArn: _ROLE
    RetryTimeMinutes: Annotated[int | None, Field(ge=0, le=2160)] = None
    ActionFailurePolicy: FailurePolicy | None = None


class RuleAction(OneOf):
    Drop: DropAction | None = None
    Relay: RelayAction | None = None
    Archive: ArchiveAction | None = None
    WriteToS3: S3Action | None = None
    Send: SendAction | None = None
    AddHeader: AddHeaderAction | None = None
    ReplaceRecipient: ReplaceRecipientAction | None = None
    DeliverToMailbox: DeliverToMailboxAction | None = None
    DeliverToQBusiness: DeliverToQBusinessAction | None = None
    PublishToSns: SnsAction | None = None
    Bounce: BounceAction | None = None
    InvokeLambda: InvokeLambdaAction | None = None

    @property
    def params(self) -> Any:
        return getattr(self, self.kind)

    @property
    def failure_policy(self) -> FailurePolicy:
        """The API default when omitted is undocumented; CONTINUE loses nothing, so we take it."""
        policy = getattr(self.params, "ActionFailurePolicy", None)
        return policy if policy is not None else FailurePolicy.CONTINUE


class Rule(CfnModel):
    Name: Annotated[
        str | None, Field(min_length=1, max_length=32, pattern=r"^[a-zA-Z0-9_.-]+$")
    ] = None
    Conditions: Annotated[list[RuleCondition], Field(max_length=10)] = []
    Unless: Annotated[list[RuleCondition], Field(max_length=10)] = []
    Actions: Annotated[list[RuleAction], Field(min_length=1, max_length=10)]


class RuleSet(CfnModel):
    Rules: Annotated[list[Rule], Field(max_length=40)]
    RuleSetName: Annotated[
        str | None, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9_.-]+$")
    ] = None
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None


# ----------------------------------------------------------------------------- other resources


class TrustStoreConfig(CfnModel):
    CAContent: Annotated[str, Field(min_length=1, max_length=500000)]
    CrlContent: Annotated[str | None, Field(min_length=1, max_length=500000)] = None
    KmsKeyArn: str | None = None


class TlsAuthConfig(CfnModel):
    TrustStore: TrustStoreConfig


class IngressPointConfig(OneOf):
    SmtpPassword: Annotated[
        str | None,
        Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9!@#$%^&*()_+\-=\[\]{}|.,?]+$"),
    ] = None
    SecretArn: Annotated[str | None, Field(pattern=_SECRET_ARN)] = None
    TlsAuthConfiguration: TlsAuthConfig | None = None


class PublicNetworkConfig(CfnModel):
    IpType: Literal["IPV4", "DUAL_STACK"]


class PrivateNetworkConfig(CfnModel):
    VpcEndpointId: Annotated[str, Field(pattern=r"^vpce-[a-zA-Z0-9]{17}$")]


class NetworkConfig(OneOf):
    PublicNetworkConfiguration: PublicNetworkConfig | None = None
    PrivateNetworkConfiguration: PrivateNetworkConfig | None = None


class IngressPoint(CfnModel):
    Type: Literal["OPEN", "AUTH", "MTLS"]
    RuleSetId: Annotated[str, Field(min_length=1, max_length=100)]
    TrafficPolicyId: Annotated[str, Field(min_length=1, max_length=100)]
    IngressPointName: Annotated[str | None, Field(min_length=3, max_length=63, pattern=_NAME)] = (
        None
    )
    IngressPointConfiguration: IngressPointConfig | None = None
    NetworkConfiguration: NetworkConfig | None = None
    TlsPolicy: Literal["REQUIRED", "OPTIONAL", "FIPS"] | None = None
    StatusToUpdate: Literal["ACTIVE", "CLOSED"] | None = None
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None

    @property
    def requires_starttls(self) -> bool:
        """Mail Manager's default TlsPolicy is OPTIONAL (unconfirmed); FIPS implies TLS."""
        return self.TlsPolicy in ("REQUIRED", "FIPS")


class NoAuth(CfnModel):
    pass


class RelayAuthentication(OneOf):
    SecretArn: Annotated[str | None, Field(pattern=_SECRET_ARN)] = None
    NoAuthentication: NoAuth | None = None


class Relay(CfnModel):
    ServerName: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9-\.]+$")]
    ServerPort: Annotated[int, Field(ge=1, le=65535)]
    Authentication: RelayAuthentication
    RelayName: Annotated[
        str | None, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9-_]+$")
    ] = None
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None


class RetentionPeriodName(StrEnum):
    THREE_MONTHS = "THREE_MONTHS"
    SIX_MONTHS = "SIX_MONTHS"
    NINE_MONTHS = "NINE_MONTHS"
    ONE_YEAR = "ONE_YEAR"
    EIGHTEEN_MONTHS = "EIGHTEEN_MONTHS"
    TWO_YEARS = "TWO_YEARS"
    THIRTY_MONTHS = "THIRTY_MONTHS"
    THREE_YEARS = "THREE_YEARS"
    FOUR_YEARS = "FOUR_YEARS"
    FIVE_YEARS = "FIVE_YEARS"
    SIX_YEARS = "SIX_YEARS"
    SEVEN_YEARS = "SEVEN_YEARS"
    EIGHT_YEARS = "EIGHT_YEARS"
    NINE_YEARS = "NINE_YEARS"
    TEN_YEARS = "TEN_YEARS"
    PERMANENT = "PERMANENT"


class ArchiveRetention(CfnModel):
    RetentionPeriod: RetentionPeriodName


class Archive(CfnModel):
    ArchiveName: Annotated[
        str | None,
        Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*[a-zA-Z0-9]$"),
    ] = None
    Retention: ArchiveRetention | None = None
    KmsKeyArn: Annotated[
        str | None,
        Field(
            pattern=r"^arn:aws(|-cn|-us-gov|-eusc):kms:[a-z0-9-]{1,20}:[0-9]{12}:(key|alias)/.+$"
        ),
    ] = None
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None


class AddressList(CfnModel):
    AddressListName: Annotated[
        str | None, Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.-]+$")
    ] = None
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None


class AddonSubscription(CfnModel):
    """A subscription to one of Mail Manager's email add-ons (a third party's analysis)."""

    AddonName: str
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None


class AddonInstance(CfnModel):
    """A usable add-on: what a policy's or rule's `Analysis.Analyzer` names."""

    AddonSubscriptionId: Annotated[str, Field(min_length=1)]
    Tags: Annotated[list[Tag] | None, Field(max_length=200)] = None
