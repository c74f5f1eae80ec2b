using Patterns.Conformance;

namespace Patterns.RabbitMq.Tests.PublicApi;

/// <summary>The public surface of Patterns.RabbitMq matches the committed file (see <see cref="PublicApiVerifier"/>).</summary>
public sealed class PublicApiTests
{
    [Fact]
    public void PublicApi_MatchesCommittedFile() =>
        PublicApiVerifier.Verify("Patterns.RabbitMq", "Patterns.RabbitMq.Tests");
}
