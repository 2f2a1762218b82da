"""The dashboard's hosting in the template: a private bucket read only by the distribution (origin access control,
a source-ARN condition, TLS only), the page served from the bucket and the API's paths sent to the account API with
nothing cached, and the site's URL and bucket in the outputs."""

from __future__ import annotations

from typing import Any

import pytest

from kilo_dev.template import Template

CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # AWS's managed cache policy ids
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


@pytest.fixture(scope="module")
def template() -> Template:
    return Template(parameters={"Stage": "test"})


def resource(template: Template, name: str, kind: str) -> dict[str, Any]:
    spec = template.resources[name]
    assert spec["Type"] == kind
    return dict(spec["Properties"])


def test_given_the_dashboard_bucket_then_no_one_but_the_distribution_reads_it(template: Template) -> None:
    bucket = resource(template, "DashboardBucket", "AWS::S3::Bucket")
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    policy = resource(template, "DashboardBucketPolicy", "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"]
    allows = [statement for statement in policy if statement["Effect"] == "Allow"]
    assert len(allows) == 1
    (read,) = allows
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert read["Action"] == "s3:GetObject"
    source = read["Condition"]["StringEquals"]["AWS:SourceArn"]
    assert "${DashboardDistribution}" in str(source)  # this distribution only
    denies = [statement for statement in policy if statement["Effect"] == "Deny"]
    assert [d["Condition"] for d in denies] == [{"Bool": {"aws:SecureTransport": "false"}}]


def test_given_the_distribution_then_the_page_comes_from_the_bucket_and_v1_goes_uncached_to_the_account_api(
    template: Template,
) -> None:
    config = resource(template, "DashboardDistribution", "AWS::CloudFront::Distribution")["DistributionConfig"]
    origins = {origin["Id"]: origin for origin in config["Origins"]}
    assert set(origins) == {"site", "account-api"}
    assert "DashboardOriginAccessControl" in str(origins["site"]["OriginAccessControlId"])
    assert "${AccountApi}.execute-api" in str(origins["account-api"]["DomainName"])
    assert origins["account-api"]["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    assert config["DefaultCacheBehavior"]["TargetOriginId"] == "site"
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["DefaultRootObject"] == "index.html"
    behaviours = {b["PathPattern"]: b for b in config["CacheBehaviors"]}
    for path in ("/v1/*", "/openapi.json"):
        api = behaviours[path]
        assert api["TargetOriginId"] == "account-api"
        # nothing cached, and the viewer's Authorization header reaches the JWT authorizer
        assert (api["CachePolicyId"], api["OriginRequestPolicyId"]) == (CACHING_DISABLED, ALL_VIEWER_EXCEPT_HOST)
    assert {"PUT", "POST", "DELETE"} <= set(behaviours["/v1/*"]["AllowedMethods"])
    assert behaviours["/config.json"]["CachePolicyId"] == CACHING_DISABLED  # a new config.json shows at once


def test_given_the_outputs_then_they_name_the_dashboard_url_and_its_bucket(template: Template) -> None:
    outputs = template.body["Outputs"]
    assert "DashboardDistribution.DomainName" in str(outputs["DashboardSiteUrl"]["Value"])
    assert "DashboardBucket" in str(outputs["DashboardBucketName"]["Value"])
