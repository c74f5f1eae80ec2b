using Patterns.Transport;

namespace Patterns.Core.Tests.Transport;

public sealed class TopicPatternTests
{
    [Theory]
    [InlineData("orders.placed", "orders.placed", true)]
    [InlineData("orders.*", "orders.placed", true)]
    [InlineData("orders.*", "orders.eu.placed", false)]
    [InlineData("orders.*", "orders", false)]
    [InlineData("orders.#", "orders", true)]
    [InlineData("orders.#", "orders.eu.placed", true)]
    [InlineData("#.placed", "orders.eu.placed", true)]
    [InlineData("#", "anything.at.all", true)]
    [InlineData("*.placed", "orders.shipped", false)]
    [InlineData("orders.#.placed", "orders.placed", true)]
    [InlineData("orders.#.placed", "orders.eu.de.placed", true)]
    [InlineData("orders.placed", "orders.Placed", false)]
    [InlineData("orders.#.#", "orders", true)]
    [InlineData("orders.#.placed", "orders.eu", false)]
    public void IsMatch_MatchesAmqpTopicSemantics(string pattern, string topic, bool expected) =>
        TopicPattern.IsMatch(pattern, topic).Should().Be(expected);

    [Theory]
    [InlineData("", "must not be empty")]
    [InlineData(" ", "must not be empty")]
    [InlineData(null, "must not be empty")]
    [InlineData("a..b", "empty segment")]
    [InlineData("a.b*", "must stand alone")]
    public void Validate_BadPattern_SaysWhatIsWrong(string? pattern, string problem) =>
        TopicPattern.Validate(pattern, allowWildcards: true).Should().Contain(problem);

    [Fact]
    public void Validate_WildcardInPublishTopic_IsRejected() =>
        TopicPattern.Validate("orders.*", allowWildcards: false).Should().Contain("only allowed in subscriptions");

    [Theory]
    [InlineData("orders.placed", false)]
    [InlineData("orders.*", true)]
    [InlineData("#", true)]
    [InlineData("orders.#.placed", true)]
    public void Validate_WellFormedTopicOrPattern_IsValid(string pattern, bool allowWildcards) =>
        TopicPattern.Validate(pattern, allowWildcards).Should().BeNull();

    [Theory]
    [InlineData("orders.placed", false)]
    [InlineData("*", true)]
    [InlineData("orders.#", true)]
    public void HasWildcards_FindsStarAndHash(string pattern, bool expected) =>
        TopicPattern.HasWildcards(pattern).Should().Be(expected);
}
