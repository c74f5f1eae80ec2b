using Patterns.Conformance;

namespace Patterns.Gateway.Tests.PublicApi;

/// <summary>The public surface of Patterns.Gateway matches the committed file (see <see cref="PublicApiVerifier"/>).</summary>
public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesCommittedFile() =>
        PublicApiVerifier.Verify("Patterns.Gateway", "Patterns.Gateway.Tests");
}
