using Patterns.Conformance;

namespace Patterns.Postgres.Tests.PublicApi;

/// <summary>The public surface of Patterns.Postgres matches the committed file (see <see cref="PublicApiVerifier"/>).</summary>
public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesCommittedFile() =>
        PublicApiVerifier.Verify("Patterns.Postgres", "Patterns.Postgres.Tests");
}
