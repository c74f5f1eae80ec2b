using Patterns.Conformance;

namespace Patterns.Sqlite.Tests.PublicApi;

/// <summary>The public surface of Patterns.Sqlite matches the committed file (see <see cref="PublicApiVerifier"/>).</summary>
public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesCommittedFile() =>
        PublicApiVerifier.Verify("Patterns.Sqlite", "Patterns.Sqlite.Tests");
}
