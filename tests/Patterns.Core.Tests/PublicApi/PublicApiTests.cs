using Patterns.Conformance;

namespace Patterns.Core.Tests.PublicApi;

/// <summary>The public surface of each package matches the committed file (see <see cref="PublicApiVerifier"/>).</summary>
public sealed class PublicApiTests
{
    [Theory]
    [InlineData("Patterns.Core")]
    [InlineData("Patterns.Testing")]
    public void PublicApi_MatchesCommittedFile(string assemblyName) =>
        PublicApiVerifier.Verify(assemblyName, "Patterns.Core.Tests");
}
