using Patterns.Conformance;

namespace Patterns.PeerLinks.Tests.PublicApi;

/// <summary>The public surface of Patterns.PeerLinks matches the committed file (see <see cref="PublicApiVerifier"/>).</summary>
public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesCommittedFile() =>
        PublicApiVerifier.Verify("Patterns.PeerLinks", "Patterns.PeerLinks.Tests");
}
